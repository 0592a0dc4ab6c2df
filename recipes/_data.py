"""Datasets named by a recipe config, built from :mod:`adaptkit.data`.

Training items are ``(uint8 clip (T, C, H, W), label, index)``; evaluation items are
``(uint8 views (V, T, C, H, W), label, video_id)`` with V = temporal clips x spatial crops.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from adaptkit.data import (
    ANNOTATION_FORMATS,
    Annotations,
    DenseSampler,
    FrameCache,
    MultiViewDataset,
    SegmentSampler,
    SyntheticMotionDataset,
    VideoClipDataset,
    VideoFileCheck,
    VideoTrainTransform,
    check_video_files,
    load_annotations,
)
from recipes._config import DataConfig, RecipeConfig, SplitConfig
from recipes._distributed import World

log = logging.getLogger("recipes")


@dataclass
class SplitAnnotations(Annotations):
    """A split's annotations after :func:`check_available`. ``left_out``: (path, reason) of the listed videos the
    training split dropped before any training (the validation split keeps them; evaluation reports them)."""

    left_out: list[tuple[str, str]] = field(default_factory=list)


def frame_sampler(data: DataConfig, num_clips: int = 1, test_mode: bool = False) -> DenseSampler | SegmentSampler:
    """Dense (``num_frames`` x ``frame_interval``) or segment sampling, as ``data.sampling`` says."""
    if data.sampling == "dense":
        return DenseSampler(data.num_frames, data.frame_interval, num_clips=num_clips, test_mode=test_mode,
                            test_convention=data.test_convention)
    return SegmentSampler(data.num_frames, num_clips=num_clips, test_mode=test_mode)


def load_split(data: DataConfig, split: SplitConfig, name: str,
               classes: Sequence[str] | None = None, for_cache: bool = False) -> SplitAnnotations:
    """Parse one split's annotations. ``classes`` (the training classes) fixes the label ids where the format
    takes them (Kinetics validation CSVs must use the train CSV's classes) and is checked otherwise.

    Every listed video is looked for first (:func:`check_available`): the training split comes back without the
    missing ones (listed in ``left_out``), the validation split with them (evaluation reports them as skipped).
    ``for_cache``: for ``adaptkit cache``, whose messages say the missing videos are not cached.
    """
    if split.annotations is None:
        raise ValueError(f"data.{name}.annotations is not set: set it to the annotation file (and data.{name}.root to "
                         "the folder of the videos)")
    for key, value in (("annotations", split.annotations), ("root", split.root)):
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(
                f"data.{name}.{key}: {Path(value).resolve()} does not exist. Set data.{name}.annotations=<annotation "
                f"file> and data.{name}.root=<folder of the videos> (on the command line or in the config)"
            )
    options = dict(data.options)
    parameters = inspect.signature(ANNOTATION_FORMATS[data.format]).parameters
    accepted = [p for p in parameters if p not in ("path", "root")]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"data.options: {unknown} are not options of the {data.format} format (it takes {accepted})")
    if classes is not None and "classes" in accepted:
        options.setdefault("classes", list(classes))
    if data.num_classes is not None and "num_classes" in accepted and "classes" not in options:
        options.setdefault("num_classes", data.num_classes)  # so a label past it is reported with its line
    annotations = load_annotations(data.format, split.annotations, root=split.root, **options)
    records = annotations.records
    if not records:
        raise ValueError(f"data.{name}.annotations: {split.annotations} lists no videos")
    if name == "train":  # a class without training videos is a head row that never learns: say so
        counts = np.bincount([r.label for r in records], minlength=annotations.num_classes)
        empty = [annotations.classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            log.warning("data.train: %d class(es) without a video in %s: %s%s", len(empty), split.annotations,
                        ", ".join(map(repr, empty[:5])), " ..." if len(empty) > 5 else "")
    annotations = check_available(data, annotations, name, split.annotations, for_cache)
    if classes is not None and list(annotations.classes) != list(classes):
        raise ValueError(
            f"data.{name} has {annotations.num_classes} classes that differ from the model's {len(classes)} "
            f"(first differing: {next((a, b) for a, b in zip(annotations.classes, classes) if a != b)})"
            if annotations.num_classes == len(classes)
            else f"data.{name} has {annotations.num_classes} classes, the model {len(classes)}"
        )
    if data.num_classes is not None and annotations.num_classes != data.num_classes:
        raise ValueError(
            f"data.num_classes is {data.num_classes} but {split.annotations} has {annotations.num_classes} classes")
    return annotations


# What becomes of the videos a split misses, as the warning and the refusal word it: by split, or for the cache command.
_MISSING_VIDEOS = {"train": ("left out of training", "To train on the rest"),
                   "val": ("evaluation skips them", "To evaluate on the rest"),
                   "cache": ("not cached", "To cache the rest")}


def check_available(data: DataConfig, annotations: Annotations, name: str, source: str,
                    for_cache: bool = False) -> SplitAnnotations:
    """Find the listed videos a run could not read before it starts: without a frame cache, files missing on disk
    (also looked for under the other video extensions; a stat each, 0.6 s for Kinetics-400's 240k rows on a local
    disk, ``python -m benchmarks.missing_files``); with one, videos it lacks, and those whose file it recorded as
    missing and that still is (a stat each of those only). Report their share and the classes left without a video,
    and refuse above ``data.max_missing_fraction``. Videos the cache recorded as unreadable are not counted: they are
    skipped, with their reason, when drawn.

    Returns:
        ``annotations`` with each path as found; for ``name == "train"`` without the missing videos, which are in
        ``left_out`` (the validation split keeps them, so that the evaluation result lists them as skipped).
        ``for_cache`` changes only the words: the warning and the refusal say the missing videos are not cached.

    Raises:
        FileNotFoundError: none of the listed files exists (a wrong root).
        ValueError: the frame cache holds none of the listed videos (built from another list or root), or the
            missing share is above ``data.max_missing_fraction`` (one line: count, examples, the key).
    """
    records = annotations.records
    gone: set[int] = set()  # missing files, when the reason of the others is another
    if data.frame_cache is None:
        check, reason, absent, fix = check_video_files(records), "missing", "video files are missing", (
            f"is data.{name}.root right?")
        if check.other_extension:
            log.info("data.%s: %d of %d videos found under another extension than the listed one", name,
                     check.other_extension, len(records))
        if len(check.missing) == len(records):
            # Before any training: a wrong root would otherwise surface only when every video has been skipped.
            raise FileNotFoundError(f"data.{name}: none of the {len(records)} videos listed in {source} exists "
                                    f"(the first: {records[0].path}); {fix}")
    else:
        cache = open_frame_cache(data.frame_cache)
        gone = {i for i, r in enumerate(records) if cache.missing_when_built(r.path)}
        check = VideoFileCheck(list(records), [i for i, r in enumerate(records) if i in gone or (
            r.path not in cache and cache.unreadable_reason(r.path) is None)])
        reason, absent, fix = "not in the frame cache", f"videos are not in the frame cache {cache.folder}", (
            "`adaptkit cache --update` adds them.")
        if gone:
            absent += f" ({len(gone)} of them missing files when it was built)"
        if not any(r.path in cache for r in records):
            raise ValueError(f"data.{name}: none of the {len(records)} videos listed in {source} is in the frame "
                             f"cache {cache.folder} (the first: {records[0].path}); was it built from another "
                             f"annotation file or root, or for the other split only (--split)? {fix}")
    if check.missing:
        line = f"data.{name}: {check.summary(annotations.classes, absent=absent)}, listed in {source}"
        fate, to_go_on = _MISSING_VIDEOS["cache" if for_cache else "train" if name == "train" else "val"]
        if check.missing_fraction > data.max_missing_fraction:
            allowed = math.ceil(check.missing_fraction * 100) / 100
            raise ValueError(f"{line}: more than data.max_missing_fraction={data.max_missing_fraction}; {fix} "
                             f"{to_go_on}, set data.max_missing_fraction={allowed}")
        log.warning("%s; %s", line, fate)
    if name != "train":
        return SplitAnnotations(check.records, list(annotations.classes))
    left_out = [(check.records[i].path, "missing" if i in gone else reason) for i in check.missing]
    return SplitAnnotations(check.found, list(annotations.classes), left_out)


@functools.lru_cache(maxsize=2)
def _frame_cache(folder: str, index_mtime_ns: int) -> FrameCache:
    return FrameCache(folder)


def open_frame_cache(folder: str) -> FrameCache:
    """The frame cache in ``folder``, read once per process while its index is unchanged: a Kinetics-size index
    takes about a second to parse, and the checks and both datasets of a run read it."""
    index = Path(folder) / "index.json"
    return _frame_cache(folder, index.stat().st_mtime_ns if index.is_file() else -1)


def _cache_of(data: DataConfig) -> FrameCache | None:
    return None if data.frame_cache is None else open_frame_cache(data.frame_cache)


def training_subset(annotations: Annotations, fraction: float) -> Annotations:
    """``round(fraction * n)`` training records (at least one), a random subset fixed by the annotations alone (the
    same for every strategy and training seed), in file order. ``fraction = 1`` keeps everything."""
    if fraction >= 1:
        return annotations
    count = max(1, round(fraction * len(annotations)))
    keep = sorted(np.random.default_rng(len(annotations)).permutation(len(annotations))[:count].tolist())
    return Annotations([annotations.records[i] for i in keep], list(annotations.classes))


def train_dataset(config: RecipeConfig) -> tuple[Dataset, list[str], list[tuple[str, str]]]:
    """The training dataset, the class names (which fix the model's head) and the (path, reason) of the listed
    videos left out before training (:func:`check_available`)."""
    data = config.data
    if data.source == "synthetic":
        s = data.synthetic
        dataset = SyntheticMotionDataset(s.train_videos, data.num_frames, s.size, s.num_classes, seed=s.seed)
        return dataset, list(dataset.classes), []
    split = load_split(data, data.train, "train")
    annotations = training_subset(split, data.train_fraction)
    dataset = VideoClipDataset(
        annotations, frame_sampler(data), VideoTrainTransform(data.augment), seed=config.train.seed,
        backend=data.decode_backend, frame_cache=_cache_of(data), decode_device=data.decode_device,
        check_files=False,  # load_split left the missing files out
    )
    return dataset, list(annotations.classes), split.left_out


class SingleViewDataset(Dataset):
    """A clip dataset seen as a one-view evaluation dataset: ``(views (1, T, C, H, W), label, video_id)``."""

    def __init__(self, clips: SyntheticMotionDataset) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        clip, label, _ = self.clips[index]
        return clip.unsqueeze(0), label, f"synthetic_{index:05d}"

    def skipped_summary(self) -> str:
        return self.clips.skipped_summary()


def eval_dataset(config: RecipeConfig, classes: Sequence[str] | None) -> tuple[Dataset, str, int]:
    """The validation dataset with every test view of a video per item, its view notation (e.g. ``8x3x1``) and its
    number of classes. ``classes`` (the model's, when known) fixes or checks the label ids, see :func:`load_split`.

    Raises:
        ValueError: more than one view asked of synthetic data, which has one per video.
    """
    data = config.data
    if data.source == "synthetic":
        views = {"eval.num_clips": config.eval.num_clips, "data.augment.test_crops": data.augment.test_crops}
        asked = [f"{key}={value}" for key, value in views.items() if value != 1]
        if asked:  # else evaluated as 1x1 while the command said otherwise
            raise ValueError(f"{' and '.join(asked)}: synthetic data (data.source=synthetic) has one view per video, "
                             "a clip generated at the model's length and size: set eval.num_clips=1 "
                             "data.augment.test_crops=1, or evaluate on videos (data.source=video)")
        s = data.synthetic
        clips = SyntheticMotionDataset(s.val_videos, data.num_frames, s.size, s.num_classes, seed=s.seed + 1)
        return SingleViewDataset(clips), f"{data.num_frames}x1x1", s.num_classes
    annotations = load_split(data, data.val, "val", classes)
    sampler = frame_sampler(data, num_clips=config.eval.num_clips, test_mode=True)
    augment = data.augment
    dataset = MultiViewDataset(
        annotations, sampler, crop_size=augment.crop_size, num_crops=augment.test_crops,
        resize_size=augment.test_resize_size, backend=data.decode_backend, frame_cache=_cache_of(data),
        decode_device=data.decode_device,
        check_files=False,  # load_split looked for every file and said which are missing
    )
    return dataset, f"{data.num_frames}x{config.eval.num_clips}x{augment.test_crops}", annotations.num_classes


def has_eval_data(config: RecipeConfig) -> bool:
    return config.data.source == "synthetic" or config.data.val.annotations is not None


class ResumableSampler(DistributedSampler):
    """DistributedSampler cut to whole optimizer steps per epoch, which can start an epoch part-way (resume).

    Every rank draws the same seeded permutation per epoch and takes its own share; ``set_epoch(epoch, skip)``
    drops the first ``skip`` samples of this rank's share, those a resumed run already trained on.
    """

    def __init__(self, dataset: Dataset, world: World, seed: int, samples_per_rank: int) -> None:
        super().__init__(dataset, num_replicas=world.world_size, rank=world.rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.samples_per_rank, self.skip = samples_per_rank, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, self.samples_per_rank)

    def __len__(self) -> int:
        return self.samples_per_rank - self.skip
