"""Procedural motion videos: the default dataset when none is given, and real files for tests and demos.

A textured bright square moves in a straight line over a dark, noisy background; the CLASS is the direction of
motion (``num_classes`` directions evenly spread on the circle, ``num_classes`` even). Playing a clip backwards
gives exactly a clip of the opposite direction (class ``label + num_classes // 2``) with the same frames, so a model
blind to frame order cannot tell a class from its opposite: it is capped at 50% accuracy (chance for 2 classes),
while a model that uses time can reach 100%.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .encode import encode_video

__all__ = [
    "SyntheticMotionDataset",
    "motion_class_names",
    "motion_clip",
    "write_corrupt_video",
    "write_synthetic_videos",
]


def _check(num_frames: int, size: int, num_classes: int) -> None:
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show motion, got {num_frames}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if num_classes < 2 or num_classes % 2:
        raise ValueError(f"num_classes must be even and >= 2 (every direction needs its opposite), got {num_classes}")


def motion_class_names(num_classes: int) -> list[str]:
    """``motion_000deg``, ...: direction of class ``c`` is ``360 * c / num_classes`` degrees, counter-clockwise
    from "rightwards" as seen on screen."""
    return [f"motion_{round(360 * c / num_classes):03d}deg" for c in range(num_classes)]


def motion_clip(
    index: int, num_frames: int = 16, size: int = 64, num_classes: int = 4, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Render clip ``index``: uint8 (T, 3, size, size) and its label ``index % num_classes``; pure function."""
    _check(num_frames, size, num_classes)
    rng = np.random.default_rng([seed, index])
    label = index % num_classes
    angle = 2 * math.pi * label / num_classes
    direction = np.array([-math.sin(angle), math.cos(angle)])  # (dy, dx): image rows grow downwards
    side = max(4, size // 4)
    travel = rng.uniform(0.5, 1.0) * (size - side - 2)  # pixels covered over the whole clip
    # The trajectory's midpoint is uniform wherever the whole path fits: symmetric under time reversal.
    half_extent = np.abs(direction) * travel / 2
    midpoint = rng.uniform(half_extent, size - side - half_extent)
    times = np.arange(num_frames) - (num_frames - 1) / 2
    corners = np.round(midpoint + times[:, None] * (travel / (num_frames - 1)) * direction).astype(int)  # (T, 2)
    background = rng.integers(0, 90, size=(size, size, 3))  # static dark texture
    noise = rng.integers(-20, 21, size=(num_frames, size, size, 3))  # fresh sensor noise per frame
    square = rng.integers(150, 256, size=(1, 1, 3)) - rng.integers(0, 40, size=(side, side, 1))  # textured patch
    frames = np.clip(background + noise, 0, 255)  # (T, H, W, C)
    for frame, (top, left) in zip(frames, corners):
        frame[top : top + side, left : left + side] = square
    return torch.from_numpy(frames.astype(np.uint8)).permute(0, 3, 1, 2).contiguous(), label  # (T, C, H, W)


class SyntheticMotionDataset(Dataset):
    """Deterministic motion-direction videos, same item contract as ``VideoClipDataset``: ``(clip, label, index)``.

    Args:
        num_videos: dataset length.
        num_frames: frames per clip (T).
        size: frame side (H = W).
        num_classes: number of directions, even.
        seed: different seeds give different videos; the same (seed, index) always gives the same clip.
        transform: optional uint8 (T, C, H, W) -> uint8 (T, C, h, w) transform (random, so not deterministic).
            The labels are directions: like SSv2, train WITHOUT horizontal flips (``AugmentConfig(hflip=False)``),
            which would turn "rightwards" clips into "leftwards" ones.

    Items are ``(clip uint8 (T, 3, size, size), label in [0, num_classes), index)`` (the clip as ``transform``
    returns it when one is given).

    Raises:
        ValueError: if ``num_videos`` < 1, ``num_frames`` < 2, ``size`` < 16, or ``num_classes`` is odd or < 2.
        IndexError: from ``ds[i]``, if ``i`` is not in [0, num_videos).

    Example:
        >>> clip, label, index = SyntheticMotionDataset(8, num_frames=8, size=32)[5]
        >>> tuple(clip.shape), label, index
        ((8, 3, 32, 32), 1, 5)
    """

    def __init__(
        self,
        num_videos: int,
        num_frames: int = 16,
        size: int = 64,
        num_classes: int = 4,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        _check(num_frames, size, num_classes)
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        self.num_videos, self.num_frames, self.size = num_videos, num_frames, size
        self.num_classes, self.seed, self.transform = num_classes, seed, transform
        self.classes = motion_class_names(num_classes)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        clip, label = motion_clip(index, self.num_frames, self.size, self.num_classes, self.seed)
        return (clip if self.transform is None else self.transform(clip)), label, index

    # Generated videos never fail and need no per-epoch state; these keep the VideoClipDataset
    # interface so training loops treat every dataset alike.
    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: clips are a function of the index alone."""

    def skipped(self) -> list[tuple[str, str]]:
        return []

    def skipped_summary(self) -> str:
        return "no videos skipped"


def write_synthetic_videos(
    folder: str | os.PathLike[str],
    num_videos: int,
    num_frames: int = 16,
    size: int = 64,
    num_classes: int = 4,
    seed: int = 0,
    codec: str = "libx264",
    extension: str = ".mp4",
) -> Path:
    """Encode :func:`motion_clip` videos as real files in a folder-per-class tree plus an MMAction2 list file.

    Layout: ``folder/<class name>/video_<index:05d><extension>`` and ``folder/list.txt`` with
    ``<class name>/video_<index:05d><extension> <label>`` lines. Read it back with
    ``load_annotations("video_list", folder / "list.txt", root=folder)`` or ``load_annotations("folder_tree", folder)``.

    Returns:
        The path of the list file.
    """
    folder = Path(folder)
    classes = motion_class_names(num_classes)
    lines = []
    for index in range(num_videos):
        clip, label = motion_clip(index, num_frames, size, num_classes, seed)
        relative = f"{classes[label]}/video_{index:05d}{extension}"
        (folder / classes[label]).mkdir(parents=True, exist_ok=True)
        options = {"crf": "10", "preset": "ultrafast"} if codec == "libx264" else {}
        encode_video(folder / relative, clip, codec=codec, options=options)
        lines.append(f"{relative} {label}\n")
    list_file = folder / "list.txt"
    list_file.write_text("".join(lines), encoding="utf-8")
    return list_file


def write_corrupt_video(path: str | os.PathLike[str], kind: str = "truncated", seed: int = 0) -> Path:
    """Write a deliberately broken video file for tests.

    Args:
        path: output path (use a video extension, e.g. ``.mp4``).
        kind: ``"truncated"`` (a valid MP4 cut in half), ``"garbage"`` (random bytes) or ``"empty"`` (0 bytes).
        seed: for the garbage bytes and the clip content.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: if ``kind`` is not one of the three above.
    """
    path = Path(path)
    if kind == "truncated":
        encode_video(path, motion_clip(seed, num_frames=8, size=32)[0])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"kind must be 'truncated', 'garbage' or 'empty', got {kind!r}")
    return path
