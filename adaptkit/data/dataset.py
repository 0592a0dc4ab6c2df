"""Datasets over real video files: one training clip per item, or all test views of one video per item.

Both decode a video once per item. Missing files are found up front (one ``os.path.exists`` per record when the
dataset is built) and flagged with one summary line; a corrupt or truncated video is logged and flagged when it fails
to decode. A record whose frame window (Diving-48's start/end frame) starts past its video's last frame is flagged
the same way (kind ``"window"``); a window ending past it is cut to the video's end, with one warning per dataset.
Flags live in a shared :class:`SkipTracker` (readable from the main process even with DataLoader workers).
Training replaces a flagged record by one drawn at random from the records not flagged, evaluation marks the item
with ``SKIPPED_LABEL`` so the evaluator leaves it out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..errors import NoReadableVideoError
from .decode import VideoDecodeError, check_gpu_decoding, decode_frames
from .frame_cache import FrameCache
from .probe import ROW_WIDTH, VideoIndex, probe_video
from .records import Annotations, VideoRecord
from .sampling import FrameSampler
from .skips import SkipTracker
from .transforms import VideoTestTransform

__all__ = ["SKIPPED_LABEL", "MultiViewDataset", "VideoClipDataset"]

SKIPPED_LABEL = -1  # label of a MultiViewDataset item whose video could not be read

logger = logging.getLogger(__name__)


def _as_records(records: Sequence[VideoRecord] | Annotations) -> list[VideoRecord]:
    records = list(records.records if isinstance(records, Annotations) else records)
    if not records:
        raise ValueError("no records")
    return records


def _spare_threads() -> int:
    """FFmpeg threads for one decoder: the cores this process may use, shared among the DataLoader workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    worker = get_worker_info()
    return max(cores // (worker.num_workers if worker is not None else 1), 1)


def _checked_device(device: str, backend: str | None) -> str:
    if torch.device(device).type != "cpu":
        if backend not in (None, "torchcodec"):
            raise ValueError(f"decode_device={device!r} needs the torchcodec backend, got backend={backend!r}")
        check_gpu_decoding(device)
    return device


class _VideoFiles:
    """Shared plumbing: resolved paths, the probed frame index of each file, skip tracking, the frame window.

    Each file is probed (demuxed) once across epochs AND DataLoader workers: the index of a constant-frame-rate file
    is a row of integers in a shared-memory table that every worker reads and the first one to open the file
    fills; variable-frame-rate files keep their pts lists in a per-process cache.
    """

    def __init__(self, records: list[VideoRecord], root: str | os.PathLike[str] | None, backend: str | None,
                 short_side: int | None = None, threads: int | None = None,
                 frame_cache: FrameCache | str | os.PathLike[str] | None = None, device: str = "cpu",
                 check_files: bool = True) -> None:
        self.records = records
        self.device = device
        self.frame_cache = frame_cache if frame_cache is None or isinstance(frame_cache, FrameCache) else (
            FrameCache(frame_cache))
        self.paths = [r.path if root is None else os.path.join(os.fspath(root), r.path) for r in records]
        self.backend, self.short_side, self.threads = backend, short_side, threads
        self.skips = SkipTracker(self.paths)
        if check_files and self.frame_cache is None:
            self.flag_missing_files()
        # Column 0 is written last: a non-negative count marks a complete row.
        self.index_table = torch.full((len(records), ROW_WIDTH), -1, dtype=torch.int64).share_memory_()
        self.variable_rate: dict[int, VideoIndex] = {}  # per process
        # Shared so that one warning covers every epoch and DataLoader worker: a whole list can end past its videos.
        self.window_cut_warned = torch.zeros(1, dtype=torch.bool).share_memory_()

    def flag_missing_files(self) -> None:
        """Flag every record whose file does not exist, with one warning for all of them. A stat per record is cheap
        (0.6 s for Kinetics-400's 240k rows on a local disk, measured) next to finding them one decode at a time."""
        missing = [i for i, path in enumerate(self.paths) if not os.path.exists(path)]
        if missing:
            self.skips.mark_missing(missing)
            logger.warning("%d of %d video files are missing and will be skipped (the first: %s)", len(missing),
                           len(self.paths), self.paths[missing[0]])

    def check_index(self, index: int) -> None:
        # Without this, out-of-range indices would wrap around and plain iteration would never stop.
        if not 0 <= index < len(self.records):
            raise IndexError(f"index {index} out of range for {len(self.records)} records")

    def video_index(self, index: int) -> VideoIndex:
        row = self.index_table[index]
        if int(row[0]) >= 0:
            return VideoIndex.from_row(row.tolist())
        if index in self.variable_rate:
            return self.variable_rate[index]
        probed = probe_video(self.paths[index])
        values = probed.to_row()
        if values is None:
            self.variable_rate[index] = probed
        else:
            row[1:] = torch.tensor(values[1:])
            row[0] = values[0]
        return probed

    def window(self, index: int) -> tuple[int, int]:
        """(first frame, number of frames) usable for record ``index``. A window ending past the video's last frame
        is cut to it (one warning per dataset; two workers at the same instant may each give it).

        Raises:
            VideoDecodeError: of kind ``"window"``, the window starts past the last frame (nothing to sample).
        """
        if self.frame_cache is not None:
            total = self.frame_cache.num_frames(self.paths[index])
        else:
            total = self.video_index(index).num_frames
        record = self.records[index]
        start = record.start_frame or 0
        end = total if record.end_frame is None else record.end_frame
        if start >= total:
            raise VideoDecodeError(self.paths[index], f"frame window {start}..{end} starts past the last frame of "
                                   f"the video ({total} frames)", kind="window")
        if end > total:
            if not self.window_cut_warned[0]:
                self.window_cut_warned[0] = True
                logger.warning("frame windows ending past their video's last frame are cut to it (the first: %s, "
                               "window %d..%d, %d frames); the others are not reported", self.paths[index], start,
                               end, total)
            end = total
        return start, max(end - start, 1)  # a hand-made record may end where it starts

    def decode(self, index: int, indices: np.ndarray) -> torch.Tensor:
        if self.frame_cache is not None:
            return self.frame_cache.frames(self.paths[index], indices).to(self.device)
        backend = "torchcodec" if torch.device(self.device).type != "cpu" else self.backend
        threads = _spare_threads() if self.threads is None else self.threads
        return decode_frames(self.paths[index], indices.reshape(-1), backend=backend,
                             index=self.video_index(index), short_side=self.short_side, threads=threads,
                             device=self.device)


class VideoClipDataset(Dataset):
    """One sampled, transformed clip per item: ``(clip uint8 (T, C, H, W), label, index)``.

    ``index`` is the record the clip came from; it differs from the requested index when a broken video was
    replaced. Missing files are flagged when the dataset is built (one summary warning); a video that fails to decode
    is logged (``logging``, with path and reason) and flagged. A flagged record is replaced by one drawn at random
    from the records not flagged (seeded by (seed, epoch, index, attempt) when ``seed`` is set), so the epoch goes
    on even when hundreds of neighbouring rows (a whole class of a class-sorted Kinetics CSV) are unreadable;
    flagged videos are not retried.

    Skipped-file reporting with DataLoader workers: the flags live in shared memory, so after (or during) an epoch
    the main process calls ``dataset.skipped_summary()`` or ``dataset.skipped()`` on its own copy of the dataset
    and sees every worker's skips.

    Args:
        records: parsed annotations (or their records).
        sampler: a train-mode sampler with ``num_clips == 1``, e.g. ``DenseSampler(8, 16)``.
        transform: uint8 (T, C, H, W) -> uint8 (T, C, h, w), e.g. :class:`VideoTrainTransform`; None keeps frames.
        root: folder joined in front of record paths.
        seed: None draws frames and augmentation from fresh entropy; an int makes each item's randomness (frame
            sampling and the transform's torch draws) a pure function of (seed, epoch, index), whatever the number
            of DataLoader workers, so a resumed run sees the same clips as an uninterrupted one.
        max_attempts: videos decoded per item before giving up with a RuntimeError (each failure is flagged, so
            every attempt draws among the records still readable).
        backend: decode backend, None = automatic.
        decoder_resize: let the decoder shrink frames to the transform's ``short_side`` (cheaper than decoding at
            full size and resizing after); the transform's own resize then does nothing.
        decode_threads: FFmpeg threads per decoder; None = this process's cores divided among the DataLoader
            workers (1 when the workers fill the cores).
        frame_cache: read frames from a :class:`FrameCache` (or its folder) built by :func:`build_frame_cache`
            instead of decoding; a video missing from the cache is skipped like a broken one.
        decode_device: ``"cuda"`` decodes with NVDEC (torchcodec) and runs the transform on the GPU, so clips come
            out on the GPU; use it with ``num_workers=0`` (CUDA does not run in forked workers).
        check_files: stat every file when the dataset is built and flag the missing ones; False when the records
            were checked already (e.g. by :func:`check_video_files`). Ignored with ``frame_cache``.

    Raises:
        ValueError: if ``records`` is empty, ``sampler.num_clips`` is not 1, ``max_attempts`` < 1, or
            ``decode_device`` is a GPU with a backend other than torchcodec.
        GPUDecodingUnavailable: ``decode_device`` is a GPU where GPU decoding cannot run (one-line reason).
        IndexError: from ``ds[i]``, if ``i`` is not in [0, len(ds)).
        NoReadableVideoError: (a RuntimeError) from ``ds[i]``, if no record is left unflagged, or if ``max_attempts``
            videos in a row fail to decode (one line: the skips counted by reason, with a few example paths).

    Example:
        >>> ds = VideoClipDataset(load_annotations("video_list", "train.txt", root="videos"),
        ...                       DenseSampler(8, 16), VideoTrainTransform(AugmentConfig.kinetics()))  # doctest: +SKIP
        >>> clip, label, index = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        records: Sequence[VideoRecord] | Annotations,
        sampler: FrameSampler,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        root: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        max_attempts: int = 10,
        backend: str | None = None,
        decoder_resize: bool = True,
        decode_threads: int | None = None,
        frame_cache: FrameCache | str | os.PathLike[str] | None = None,
        decode_device: str = "cpu",
        check_files: bool = True,
    ) -> None:
        if sampler.num_clips != 1:
            raise ValueError(f"VideoClipDataset takes one clip per item; use MultiViewDataset for {sampler.num_clips}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        short_side = getattr(transform, "short_side", None) if decoder_resize else None
        self.files = _VideoFiles(_as_records(records), root, backend, short_side, decode_threads, frame_cache,
                                 _checked_device(decode_device, backend), check_files)
        self.sampler, self.transform, self.seed, self.max_attempts = sampler, transform, seed, max_attempts
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # shared so persistent workers see it

    def __len__(self) -> int:
        return len(self.files.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the seeded frame sampling per epoch (no effect when ``seed`` is None)."""
        self._epoch[0] = epoch

    def _rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, int(self._epoch[0]), index])

    def _transform(self, clip: torch.Tensor, index: int) -> torch.Tensor:
        if self.transform is None:
            return clip
        if self.seed is None:
            return self.transform(clip)
        # torch's RNG is per process: seed a private copy from (seed, epoch, index) so that neither the worker
        # count nor which worker serves the item changes the draw, and the caller's RNG is left as it was.
        seed = np.random.SeedSequence([self.seed, int(self._epoch[0]), index, 1]).generate_state(1, np.uint64)[0]
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed >> np.uint64(1)))  # the CPU generator only
            return self.transform(clip)

    def _load(self, index: int) -> torch.Tensor:
        start, length = self.files.window(index)
        indices = self.sampler(length, self._rng(index)) + start  # (1, T)
        clip = self.files.decode(index, indices)  # (T, C, H, W) uint8, channels-last memory
        # The transform runs fastest on the decoder's channels-last frames; the (smaller) result goes out contiguous.
        return self._transform(clip, index).contiguous()

    def _replacement(self, index: int, attempt: int) -> int | None:
        """A record not flagged, drawn uniformly over the whole list (not the neighbours: a class-sorted CSV puts a
        missing class in one run of rows); None when every record is flagged."""
        rng = np.random.default_rng(None if self.seed is None else [self.seed, int(self._epoch[0]), index, 2, attempt])
        for _ in range(32):  # a few uniform draws find an unflagged record unless nearly all are flagged
            candidate = int(rng.integers(len(self)))
            if not self.files.skips.is_skipped(candidate):
                return candidate
        readable = self.files.skips.unflagged()  # a scan of every flag: ~10 ms for 240k records
        return int(readable[rng.integers(len(readable))]) if len(readable) else None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        self.files.check_index(index)
        candidate: int | None = index
        for attempt in range(self.max_attempts):
            if not self.files.skips.is_skipped(candidate):
                try:
                    return self._load(candidate), self.files.records[candidate].label, candidate
                except VideoDecodeError as error:
                    self.files.skips.mark(candidate, error)
            candidate = self._replacement(index, attempt)
            if candidate is None:
                raise NoReadableVideoError(f"no readable video left: all {len(self)} videos were skipped "
                                           f"({self.files.skips.brief()})")
        raise NoReadableVideoError(f"{self.max_attempts} videos in a row could not be decoded for index {index} "
                                   f"({self.files.skips.brief()})")

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every video skipped so far, by any worker."""
        return self.files.skips.skipped()

    def skipped_summary(self) -> str:
        """Human-readable list of skipped videos, for the end of training."""
        return self.files.skips.summary()


class MultiViewDataset(Dataset):
    """All test views of one video per item: ``(views uint8 (V, T, C, S, S), label, video_id)``.

    V = temporal clips x spatial crops, clip-major (clip 0 crop 0, clip 0 crop 1, ...). The frames of every clip
    are decoded in ONE :func:`decode_frames` call and resized once. An unreadable video is logged, flagged, and
    returned as zeros with label ``SKIPPED_LABEL`` so the evaluator can leave it out and report it.

    Args:
        records: parsed annotations (or their records).
        sampler: a test-mode sampler, e.g. ``DenseSampler(8, 16, num_clips=3, test_mode=True)``.
        crop_size: output side S.
        num_crops: 1 (centre) or 3 (ThreeCrop).
        resize_size: short side before cropping; None = crop_size.
        root: folder joined in front of record paths.
        backend: decode backend, None = automatic.
        decoder_resize: let the decoder shrink frames to ``resize_size`` before the crops.
        decode_threads: FFmpeg threads per decoder; None = cores divided among the DataLoader workers.
        frame_cache: read frames from a :class:`FrameCache` (or its folder) instead of decoding.
        decode_device: ``"cuda"`` decodes with NVDEC and crops on the GPU (``num_workers=0``).
        check_files: stat every file when the dataset is built and flag the missing ones (one summary warning);
            ignored with ``frame_cache``.

    Raises:
        ValueError: if ``records`` is empty, ``sampler`` is not in test mode, ``num_crops`` is not 1 or 3,
            ``resize_size`` < ``crop_size``, or ``decode_device`` is a GPU with a backend other than torchcodec.
        GPUDecodingUnavailable: ``decode_device`` is a GPU where GPU decoding cannot run (one-line reason).
        IndexError: from ``ds[i]``, if ``i`` is not in [0, len(ds)). (An unreadable video raises
            nothing: it comes back as zeros with ``SKIPPED_LABEL``.)
    """

    def __init__(
        self,
        records: Sequence[VideoRecord] | Annotations,
        sampler: FrameSampler,
        crop_size: int = 224,
        num_crops: int = 1,
        resize_size: int | None = None,
        root: str | os.PathLike[str] | None = None,
        backend: str | None = None,
        decoder_resize: bool = True,
        decode_threads: int | None = None,
        frame_cache: FrameCache | str | os.PathLike[str] | None = None,
        decode_device: str = "cpu",
        check_files: bool = True,
    ) -> None:
        if not sampler.test_mode:
            raise ValueError("MultiViewDataset needs a test-mode (deterministic) sampler")
        self.sampler = sampler
        self.transform = VideoTestTransform(crop_size, num_crops, resize_size)
        short_side = self.transform.short_side if decoder_resize else None
        self.files = _VideoFiles(_as_records(records), root, backend, short_side, decode_threads, frame_cache,
                                 _checked_device(decode_device, backend), check_files)

    @property
    def num_views(self) -> int:
        return self.sampler.num_clips * self.transform.num_crops

    def __len__(self) -> int:
        return len(self.files.records)

    def _load(self, index: int) -> torch.Tensor:
        start, length = self.files.window(index)
        indices = self.sampler(length) + start  # (K, T)
        num_clips, clip_len = indices.shape
        frames = self.files.decode(index, indices)  # (K*T, C, H, W), one decode for all views
        crops = self.transform(frames)  # (N, K*T, C, S, S)
        crops = crops.unflatten(1, (num_clips, clip_len))  # (N, K, T, C, S, S)
        return crops.transpose(0, 1).flatten(0, 1).contiguous()  # (K*N, T, C, S, S)

    def views(self, index: int) -> torch.Tensor:
        """All test views of record ``index``, uint8 (V, T, C, S, S), clip-major. Unlike ``ds[index]``, an
        unreadable video is neither logged nor flagged: the error is the caller's (e.g. one video to predict on).

        Raises:
            IndexError: if ``index`` is not in [0, len(ds)).
            VideoDecodeError: the video is missing, corrupt or truncated (also when that shows only part-way through
                decoding), or its frame window starts past its last frame.
        """
        self.files.check_index(index)
        return self._load(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        self.files.check_index(index)
        record = self.files.records[index]
        if not self.files.skips.is_skipped(index):
            try:
                return self._load(index), record.label, record.video_id
            except VideoDecodeError as error:
                self.files.skips.mark(index, error)
        size = self.transform.crop_size
        blank = torch.zeros(self.num_views, self.sampler.clip_len, 3, size, size, dtype=torch.uint8,
                            device=self.files.device)
        return blank, SKIPPED_LABEL, record.video_id

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every video that could not be read, by any worker."""
        return self.files.skips.skipped()

    def skipped_summary(self) -> str:
        """Human-readable list of unreadable videos."""
        return self.files.skips.summary()
