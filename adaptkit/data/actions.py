"""Generated action videos whose classes differ only in the direction of time, written as real video files.

Like Something-Something, every class has a partner that is the same action played backwards: moving left to right /
right to left, down / up, approaching (growing) / moving away (shrinking), turning clockwise (an upright object
tipped about its base) / anticlockwise (raised back upright), appearing / disappearing. The videos come in exact
reversed pairs: video ``2j`` is rendered forwards (class ``2k``) and video ``2j + 1`` holds the same frames in
reverse order (class ``2k + 1``). A model that ignores frame order sees the same set of frames for both, so it is at
chance on telling them apart and its top-1 is at most 50% (the *order-blind ceiling*); only temporal modelling gets
above it.

Nuisances vary so appearance alone cannot solve it: six shapes, six colours, sizes, speeds, start positions, wave
textured backgrounds and static distractor shapes. Lengths are 2-6 s at 12-30 fps, different per video. Frames are
encoded losslessly (x264, qp 0), so decoding a reversed video gives exactly the reversed frames.

Typical use::

    dataset = generate_action_dataset(ActionVideoSettings(train_videos=800), cache_dir=".cache/embedded")
    ann = load_annotations("video_list", dataset.train_list, root=dataset.root, classes=ACTION_CLASSES)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaptkit.io import atomic_directory

from .encode import encode_video
from .sampling import SegmentSampler
from .shapes import COLOURS, SHAPES, composite, render_masks, textured_background

__all__ = [
    "ACTION_CLASSES",
    "ACTION_PAIRS",
    "ActionDataset",
    "ActionVideoSettings",
    "action_video",
    "generate_action_dataset",
    "mirror_lengths",
    "reversed_partner",
    "write_action_videos",
]

# (forward, backward) class names; class 2k is pair k forwards, 2k + 1 the same frames reversed.
ACTION_PAIRS = (
    ("Moving something from left to right", "Moving something from right to left"),
    ("Moving something down", "Moving something up"),
    ("Approaching something (it grows)", "Moving something away (it shrinks)"),
    ("Turning something clockwise", "Turning something anticlockwise"),
    ("Something appearing", "Something disappearing"),
)
ACTION_CLASSES = tuple(name for pair in ACTION_PAIRS for name in pair)
_KINDS = ("translate_x", "translate_y", "scale", "rotate", "fade")
_FPS_CHOICES = (12, 15, 24, 25, 30)
GENERATOR_VERSION = 4  # bump when the rendering changes: part of the cache key


def reversed_partner(label: int) -> int:
    """The class holding the same action played backwards (``label ^ 1``)."""
    return label ^ 1


def mirror_lengths(clip_len: int, low: int, high: int) -> list[int]:
    """Frame counts in [low, high] for which test-mode segment sampling of ``clip_len`` frames picks mirror-image
    indices (``sorted(n - 1 - idx) == idx``): a video and its reversal then show the model the same frames."""
    sampler = SegmentSampler(clip_len, test_mode=True)
    return [n for n in range(low, high + 1) if np.array_equal(np.sort(n - 1 - sampler(n)[0]), sampler(n)[0])]


@dataclass(frozen=True)
class ActionVideoSettings:
    """Everything that decides the generated dataset (its hash names the cache folder).

    Raises:
        ValueError: on construction, if ``train_videos`` or ``val_videos`` is odd or < 2, ``size`` is odd or
            < 16, or ``min_seconds`` / ``max_seconds`` do not satisfy 0 < min <= max. (:func:`action_video`
            raises ValueError later if no length in that range is mirror-symmetric for ``mirror_clip_len``.)
    """

    train_videos: int = 800  # even: reversed pairs
    val_videos: int = 400  # even; rendered from another seed
    size: int = 32  # frame side in pixels
    seed: int = 0  # train pairs use seed, validation pairs seed + 1
    min_seconds: float = 2.0
    max_seconds: float = 6.0
    mirror_clip_len: int | None = 8  # choose lengths symmetric for this test clip length (None: any length)
    distractors: tuple[int, int] = (0, 1)  # static distractor shapes per video (min, max)
    background_contrast: float = 3.0  # grey levels per unit of the background's wave texture (6 was too busy)

    def __post_init__(self) -> None:
        for name in ("train_videos", "val_videos"):
            value = getattr(self, name)
            if value < 2 or value % 2:
                raise ValueError(f"{name} must be even and >= 2 (videos come in reversed pairs), got {value}")
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size must be even and >= 16, got {self.size}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")

    def key(self) -> str:
        """Short hash of the settings and the generator version."""
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _num_frames(rng: np.random.Generator, settings: ActionVideoSettings) -> tuple[int, int]:
    fps = int(rng.choice(_FPS_CHOICES))
    low, high = math.ceil(settings.min_seconds * fps), math.floor(settings.max_seconds * fps)
    target = rng.uniform(settings.min_seconds, settings.max_seconds) * fps
    if settings.mirror_clip_len is None:
        return max(2, round(target)), fps
    candidates = mirror_lengths(settings.mirror_clip_len, low, high)
    if not candidates:
        raise ValueError(f"no length in [{low}, {high}] frames is mirror-symmetric for {settings.mirror_clip_len} "
                         f"frames: widen min_seconds / max_seconds")
    return min(candidates, key=lambda n: (abs(n - target), n)), fps


def action_video(
    pair_index: int, settings: ActionVideoSettings, seed: int, num_frames: int | None = None
) -> tuple[torch.Tensor, int, int]:
    """Render the FORWARD video of reversed pair ``pair_index``: uint8 (T, 3, size, size), its class, its fps.

    Pure function of its arguments. The action kind cycles with ``pair_index`` (balanced classes); the backward
    partner is ``video.flip(0)`` with class :func:`reversed_partner`. ``num_frames`` overrides the drawn length.

    Raises:
        ValueError: if no length between ``settings.min_seconds`` and ``max_seconds`` (at the drawn fps) is
            mirror-symmetric for ``settings.mirror_clip_len`` frames.
    """
    rng = np.random.default_rng([seed, pair_index])
    kind_index = pair_index % len(_KINDS)
    kind, size = _KINDS[kind_index], settings.size
    length, fps = _num_frames(rng, settings)
    n = length if num_frames is None else num_frames
    start, end = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)  # the action's part of the timeline
    progress = np.clip((np.linspace(0.0, 1.0, n) - start) / (end - start), 0.0, 1.0)  # (T,)

    background = textured_background(rng, size, "waves", settings.background_contrast)
    colour_names = list(COLOURS)
    actor_colour = int(rng.integers(len(colour_names)))
    frames = np.broadcast_to(background, (n, size, size, 3)).copy()  # (T, H, W, 3) float
    for _ in range(int(rng.integers(settings.distractors[0], settings.distractors[1] + 1))):
        other = (actor_colour + 1 + int(rng.integers(len(colour_names) - 1))) % len(colour_names)
        radius = rng.uniform(0.06, 0.09) * size
        centre = rng.uniform(radius, size - radius, size=2)
        mask = render_masks(str(rng.choice(SHAPES)), size, centre[None], np.array([radius]),
                            np.array([rng.uniform(0, 2 * np.pi)]))
        frames = composite(frames, np.broadcast_to(mask, (n, size, size)),
                           np.array(COLOURS[colour_names[other]]) + rng.normal(0, 12, 3))

    shape = str(rng.choice(SHAPES))
    colour = np.array(COLOURS[colour_names[actor_colour]]) + rng.normal(0, 12, 3)
    angle0 = rng.uniform(0, 2 * np.pi)
    ones = np.ones(n)
    opacity = None
    if kind in ("translate_x", "translate_y"):
        radius = rng.uniform(0.2, 0.25) * size
        travel = rng.uniform(0.4, 0.5) * size
        axis = 1 if kind == "translate_x" else 0  # column (rightwards) or row (downwards)
        along0 = rng.uniform(radius, size - radius - travel)
        across = rng.uniform(radius, size - radius)
        centres = np.empty((n, 2))
        centres[:, axis] = along0 + travel * progress
        centres[:, 1 - axis] = across
        radii, angles = radius * ones, angle0 * ones
    elif kind == "scale":
        r0 = rng.uniform(0.12, 0.15) * size
        r1 = r0 * rng.uniform(2.0, 2.4)
        centres = np.broadcast_to(rng.uniform(r1, size - r1, size=2), (n, 2))
        radii, angles = r0 + (r1 - r0) * progress, angle0 * ones
    elif kind == "rotate":
        # Turned about a pivot at its base, from upright (within 17 degrees) by 100-160 degrees clockwise. The
        # upright start matters: from a uniformly random start, "clockwise" is a cyclic order of orientations that
        # a readout linear in time cannot tell from its reversal (README, measured at chance).
        radius = rng.uniform(0.18, 0.22) * size
        arm = 0.9 * radius  # pivot to centre
        pivot = rng.uniform(arm + radius, size - arm - radius, size=2)
        angles = rng.uniform(-0.3, 0.3) + np.deg2rad(rng.uniform(100, 160)) * progress  # clockwise on screen
        centres = np.stack([pivot[0] - arm * np.cos(angles), pivot[1] + arm * np.sin(angles)], axis=1)  # (T, 2)
        radii = radius * ones
    else:  # fade in
        radius = rng.uniform(0.2, 0.28) * size
        centres = np.broadcast_to(rng.uniform(radius, size - radius, size=2), (n, 2))
        radii, angles, opacity = radius * ones, angle0 * ones, progress
    frames = composite(frames, render_masks(shape, size, centres, radii, angles), colour, opacity)
    video = torch.from_numpy(np.clip(np.rint(frames), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2)
    return video.contiguous(), 2 * kind_index, fps  # (T, 3, H, W)


def _write_pair(folder: Path, split: str, pair: int, settings: ActionVideoSettings, seed: int) -> list[str]:
    """Encode reversed pair ``pair`` (videos ``2 pair`` and ``2 pair + 1``); returns their list-file lines."""
    video, label, fps = action_video(pair, settings, seed)
    lines = []
    for index, (clip, clip_label) in enumerate(((video, label), (video.flip(0), reversed_partner(label)))):
        relative = f"{split}/{split}_{2 * pair + index:05d}.mp4"
        encode_video(folder / relative, clip, fps=fps, options={"qp": "0", "preset": "ultrafast"})
        lines.append(f"{relative} {clip_label}\n")
    return lines


def write_action_videos(folder: str | os.PathLike[str], split: str, num_videos: int,
                        settings: ActionVideoSettings, seed: int, workers: int = 0) -> Path:
    """Encode ``num_videos`` videos (reversed pairs) as ``folder/<split>/<split>_<i:05d>.mp4`` and write the MMAction2
    list ``folder/<split>.txt``. Returns the list file. ``workers`` > 0 renders pairs in that many processes; every
    video is a pure function of its pair index, so the files are the same either way."""
    folder = Path(folder)
    (folder / split).mkdir(parents=True, exist_ok=True)
    write_pair = functools.partial(_write_pair, folder, split, settings=settings, seed=seed)
    pairs = range(num_videos // 2)
    if workers > 0:
        # spawn, not fork: a child forked from a process whose OpenMP threads are running can deadlock in torch.
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_quiet_on_interrupt) as pool:
            chunks = pool.map(write_pair, pairs, chunksize=16)  # leaving the block (Ctrl-C too) terminates the workers
    else:
        chunks = [write_pair(pair) for pair in pairs]
    list_file = folder / f"{split}.txt"
    list_file.write_text("".join(line for chunk in chunks for line in chunk), encoding="utf-8")
    return list_file


def _quiet_on_interrupt() -> None:
    """A worker's initializer: Ctrl-C reaches the whole process group; a worker then ends at once and silently, and
    the parent alone reports it (one line) instead of every worker printing a KeyboardInterrupt traceback. What the
    worker was writing is in the staging folder, which is discarded."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


@dataclass(frozen=True)
class ActionDataset:
    """A generated dataset on disk: MMAction2 video lists (paths relative to ``root``) and the class names."""

    root: Path
    train_list: Path
    val_list: Path
    classes: tuple[str, ...] = ACTION_CLASSES


def generate_action_dataset(settings: ActionVideoSettings, cache_dir: str | os.PathLike[str],
                            workers: int = 0) -> ActionDataset:
    """The dataset for ``settings``, generated once into ``cache_dir/actions-<hash>`` and reused afterwards
    (``workers``: rendering processes, see :func:`write_action_videos`).

    The folder appears atomically (written next to it, then renamed), so an interrupted generation leaves no
    half-written dataset behind.
    """
    root = Path(cache_dir) / f"actions-{settings.key()}"
    dataset = ActionDataset(root, root / "train.txt", root / "val.txt")
    if (root / "settings.json").is_file():
        return dataset

    def build(staging: Path) -> None:
        write_action_videos(staging, "train", settings.train_videos, settings, settings.seed, workers)
        write_action_videos(staging, "val", settings.val_videos, settings, settings.seed + 1, workers)
        (staging / "classes.txt").write_text("\n".join(ACTION_CLASSES) + "\n", encoding="utf-8")
        (staging / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")

    atomic_directory(root, build)
    return dataset
