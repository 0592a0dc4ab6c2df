"""Frame samplers following MMAction2's ``SampleFrames`` (dense) and ``UniformSample`` (segment) conventions.

A sampler maps a video's frame count to frame indices of shape (num_clips, clip_len), int64:
``indices = sampler(num_frames, rng)``. Training samplers draw from ``rng``; test-mode samplers are deterministic.
Dense test views come in two layouts that MMAction2 changed between versions: the AIM authors' code (MMAction2 0.x)
and MMAction2 1.x; :data:`DENSE_TEST_CONVENTIONS` names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["DENSE_TEST_CONVENTIONS", "DenseSampler", "FrameSampler", "SegmentSampler"]

# Dense test-view layouts by name. "mmaction2-0.x": the AIM authors' code, with which the paper's numbers were
# measured; "mmaction2-1.x": first clip at 0, last ending at the video end.
DENSE_TEST_CONVENTIONS = ("mmaction2-0.x", "mmaction2-1.x")


class FrameSampler(Protocol):
    """Anything that turns a frame count into (num_clips, clip_len) int64 frame indices."""

    clip_len: int
    num_clips: int
    test_mode: bool

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices for a video of ``num_frames`` frames.

        Args:
            num_frames: Frames in the video (or in its annotated window), >= 1.
            rng: Source of the training-mode draws (None: fresh entropy); unused in test mode.

        Returns:
            int64 array (num_clips, clip_len), every index in [0, num_frames), clip-major.

        Raises:
            ValueError: if ``num_frames`` < 1 (the samplers in this module).
        """
        ...


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_num_frames(num_frames: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


@dataclass(frozen=True)
class DenseSampler:
    """Dense sampling ``SampleFrames(clip_len, frame_interval, num_clips)`` (Kinetics: 8x16, 16x8, 32x4).

    Train: span = clip_len * interval, avg = (n - span + 1) // num_clips; if avg > 0 each clip starts at
    ``i * avg + randint(avg)``, otherwise at sorted random offsets in [0, n - span] (0 when n <= span).
    Test, ``test_convention="mmaction2-1.x"``: span = (clip_len - 1) * interval + 1, max_off = max(n - span, 0);
    several clips are spread evenly with the first at 0 and the last ending at the video end
    (``round(i * max_off / (k - 1))``), a single clip is centred (``max_off // 2``).
    Test, ``test_convention="mmaction2-0.x"`` (the AIM authors' code, used for the paper's numbers):
    avg = (n - clip_len * interval + 1) / k, clip i starts at ``int(avg * (i + 0.5))``; every start is 0 when
    n < clip_len * interval. For n=300, 8x16, 3 clips: 1.x starts at [0, 94, 187], 0.x at [28, 86, 144].
    Indices are ``offset + arange(clip_len) * interval``, wrapped modulo n ("loop") for short videos.

    Args:
        clip_len: frames per clip.
        frame_interval: step between sampled frames.
        num_clips: clips per video (temporal views at test time).
        test_mode: deterministic test offsets instead of random training offsets.
        test_convention: the test-view layout, one of :data:`DENSE_TEST_CONVENTIONS`.

    Raises:
        ValueError: a non-positive size, or an unknown ``test_convention``.

    Example:
        >>> DenseSampler(clip_len=4, frame_interval=2, num_clips=1, test_mode=True)(20)
        array([[ 6,  8, 10, 12]])
        >>> DenseSampler(4, 2, num_clips=2, test_mode=True, test_convention="mmaction2-0.x")(20)
        array([[ 3,  5,  7,  9],
               [ 9, 11, 13, 15]])
        >>> DenseSampler(4, 2, num_clips=2, test_mode=True, test_convention="mmaction2-1.x")(20)
        array([[ 0,  2,  4,  6],
               [13, 15, 17, 19]])
    """

    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    test_mode: bool = False
    test_convention: str = "mmaction2-1.x"

    def __post_init__(self) -> None:
        _check_positive(clip_len=self.clip_len, frame_interval=self.frame_interval, num_clips=self.num_clips)
        if self.test_convention not in DENSE_TEST_CONVENTIONS:
            raise ValueError(
                f"test_convention must be one of {list(DENSE_TEST_CONVENTIONS)}, got {self.test_convention!r}")

    def _train_offsets(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        span = self.clip_len * self.frame_interval
        avg_interval = (num_frames - span + 1) // self.num_clips
        if avg_interval > 0:
            return np.arange(self.num_clips) * avg_interval + rng.integers(avg_interval, size=self.num_clips)
        if num_frames > span:
            return np.sort(rng.integers(num_frames - span + 1, size=self.num_clips))
        return np.zeros(self.num_clips, dtype=np.int64)

    def _test_offsets(self, num_frames: int) -> np.ndarray:
        if self.test_convention == "mmaction2-0.x":
            span = self.clip_len * self.frame_interval
            if num_frames < span:  # MMAction2 0.x: `num_frames > span - 1` else zeros
                return np.zeros(self.num_clips, dtype=np.int64)
            average = (num_frames - span + 1) / self.num_clips
            return (average * (np.arange(self.num_clips) + 0.5)).astype(np.int64)
        span = (self.clip_len - 1) * self.frame_interval + 1
        max_offset = max(num_frames - span, 0)
        if self.num_clips == 1:
            return np.array([max_offset // 2])
        return np.round(np.arange(self.num_clips) * (max_offset / (self.num_clips - 1)))

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return (num_clips, clip_len) int64 indices in [0, num_frames)."""
        _check_num_frames(num_frames)
        if self.test_mode:
            offsets = self._test_offsets(num_frames)
        else:
            offsets = self._train_offsets(num_frames, np.random.default_rng() if rng is None else rng)
        indices = offsets.astype(np.int64)[:, None] + np.arange(self.clip_len) * self.frame_interval
        return np.mod(indices, num_frames)  # (num_clips, clip_len); "loop" for videos shorter than a clip


@dataclass(frozen=True)
class SegmentSampler:
    """Segment ("uniform") sampling for SSv2 and Diving-48: one frame from each of ``clip_len`` equal segments.

    seg = (n - 1) / clip_len; segment i spans ``round(seg * i) .. round(seg * (i + 1))`` (both ends included).
    Train draws a random frame in each segment (independently per clip). Test clip k of K takes the
    frame ``start + (end - start) * (k + 1) // (K + 1)`` of each segment: with one clip (the papers'
    SSv2 protocol) the middle ``(start + end) // 2``; with more, points spread evenly inside the
    segments, as MMAction2 1.x's ``UniformSample`` does (which offsets by ``int(seg * (k + 1) / (K + 1))``
    from the start: at most one frame apart). Test clips repeat frames only where a segment is shorter
    than K. There is no frame interval.

    Args:
        clip_len: frames per clip (= number of segments).
        num_clips: clips per video.
        test_mode: middle frames instead of random ones.

    Example:
        >>> SegmentSampler(clip_len=4, test_mode=True)(9)
        array([[1, 3, 5, 7]])
        >>> SegmentSampler(clip_len=4, num_clips=2, test_mode=True)(13)
        array([[ 1,  4,  7, 10],
               [ 2,  5,  8, 11]])
    """

    clip_len: int
    num_clips: int = 1
    test_mode: bool = False

    def __post_init__(self) -> None:
        _check_positive(clip_len=self.clip_len, num_clips=self.num_clips)

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return (num_clips, clip_len) int64 indices in [0, num_frames)."""
        _check_num_frames(num_frames)
        segment = (num_frames - 1) / self.clip_len
        bounds = np.round(segment * np.arange(self.clip_len + 1)).astype(np.int64)
        starts, ends = bounds[:-1], bounds[1:]
        if self.test_mode:  # (num_clips, 1) fractions x (clip_len,) segment lengths -> (num_clips, clip_len)
            k = np.arange(1, self.num_clips + 1)[:, None]
            return starts + (ends - starts) * k // (self.num_clips + 1)
        rng = np.random.default_rng() if rng is None else rng
        # Generator.integers with array bounds draws in [start, end] per segment (endpoint=True).
        return rng.integers(starts, ends, size=(self.num_clips, self.clip_len), endpoint=True)
