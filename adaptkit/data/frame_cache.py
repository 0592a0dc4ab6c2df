"""A pre-decoded frame cache, for when decoding cannot keep up: every frame of every video, resized, stored raw.

Layout of a cache folder::

    index.json        {"version", "short_side", "chunk_bytes",
                       "videos": {path: [chunk, byte offset, frames, H, W, file bytes, file mtime_ns]},
                       "skipped": [[path, reason, kind, file bytes, file mtime_ns], ...]}
    chunk_00000.u8    frames of many videos back to back, each video (frames, H, W, 3) uint8 RGB, C order
    chunk_00001.u8    ...

Chunks are plain byte files of bounded size, read through ``numpy.memmap``: a clip reads only its own frames' pages,
the operating system's page cache is shared by all DataLoader workers, and nothing is unpickled. Videos are keyed by
the absolute path of the file decoded, so the datasets that read the cache (training clips and multi-view evaluation
alike) find a record's frames from the same annotation file and root the cache was built from; a record whose file
was found under another video extension (``x.webm`` for a listed ``x.mp4``) is found under the path recorded.

Each video's size and modification time are recorded when it is cached. A video whose file has since changed (a
re-encode or re-download, as ``make`` and ``rsync`` judge it: size or mtime) is not read from the cache: it raises
:class:`VideoDecodeError` of kind ``"stale"``, so datasets skip it and say why. A video whose file is gone is still
read from the cache (the cache can stand in for the videos). Version-1 caches, which kept no file sizes, are still
read, without this check.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from adaptkit.io import exclusive_lock

from .decode import decode_frames
from .probe import VideoDecodeError, probe_video
from .records import Annotations, VideoRecord
from .video_files import other_extension_paths

__all__ = ["FrameCache", "build_frame_cache"]

logger = logging.getLogger(__name__)

_INDEX = "index.json"
_LOCK = ".lock"  # held by the one process building the cache
_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: no file size and mtime per video, no kind per skipped video


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def _file_stamp(path: str) -> tuple[int, int] | None:
    """(bytes, mtime in ns) of ``path``, None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _difference(path: str, recorded: Sequence[int]) -> str | None:
    """How ``path`` differs from the file recorded as (bytes, mtime_ns) when the cache was built; None when the same,
    gone, or not recorded (version 1)."""
    stamp = _file_stamp(path)
    if len(recorded) < 2 or stamp is None or stamp == tuple(recorded):
        return None
    if stamp[0] != recorded[0]:
        return f"now {stamp[0]} bytes, {recorded[0]} when cached"
    return "modified after it was cached"


class FrameCache:
    """Read access to a cache written by :func:`build_frame_cache`; safe to copy into DataLoader workers.

    Args:
        folder: the cache folder.

    Raises:
        FileNotFoundError: no ``index.json`` in ``folder`` (the message names the command that builds one).
        ValueError: an index of an unknown version.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        index_path = self.folder / _INDEX
        if not index_path.is_file():
            raise FileNotFoundError(f"{self.folder} is not a frame cache (no {_INDEX}); build one with "
                                    "`adaptkit cache --config <config> --out <folder>`")
        try:
            index = json.loads(index_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{index_path} is not a readable frame cache index ({error}); rebuild the cache with "
                             "`adaptkit cache`") from None
        self.version = index.get("version")
        if self.version not in _READABLE_VERSIONS:
            raise ValueError(f"{index_path}: frame cache version {self.version}, expected one of {_READABLE_VERSIONS}")
        self.short_side: int = index["short_side"]
        self.videos: dict[str, list[int]] = index["videos"]
        self.skipped: list[list[str]] = index["skipped"]
        self._skipped = {entry[0]: entry for entry in self.skipped}
        self._chunks: dict[int, np.memmap] = {}  # opened lazily, per process
        self._unchanged: set[str] = set()  # videos whose file this process found as cached (stat once per file)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_chunks": {}}  # memory maps are reopened in each worker

    def __contains__(self, path: str | os.PathLike[str]) -> bool:
        key = self.recorded_path(path)
        return key is not None and key in self.videos

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def unreferenced_bytes(self) -> int:
        """Bytes of the chunk files that no cached video uses: old frames of videos re-cached by an update."""
        on_disk = sum(chunk.stat().st_size for chunk in self.folder.glob("chunk_*.u8"))
        return on_disk - sum(_video_bytes(entry) for entry in self.videos.values())

    def recorded_path(self, path: str | os.PathLike[str]) -> str | None:
        """The absolute path the cache recorded ``path``'s video under when it was built: ``path`` itself, else the
        same path under another video extension (the file the build's file check found in its place, e.g.
        ``x.webm`` for a listed ``x.mp4`` or ``x``); a cached file before one left out as unreadable. None when the
        cache has neither."""
        key = _key(path)
        if key in self.videos:  # the common case, on every clip read: no candidate list to build
            return key
        candidates = [key, *other_extension_paths(key)]
        for recorded in (self.videos, self._skipped):
            found = next((candidate for candidate in candidates if candidate in recorded), None)
            if found is not None:
                return found
        return None

    def unreadable_reason(self, path: str | os.PathLike[str]) -> str | None:
        """Why ``path`` was left out when the cache was built (it was unreadable), or None."""
        key = self.recorded_path(path)
        entry = None if key is None else self._skipped.get(key)
        return None if entry is None else entry[1]

    def missing_when_built(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path``'s file did not exist when the cache was built, and still does not (one that appeared since
        reads as changed); False for a version-1 cache, which recorded no kind."""
        key = self.recorded_path(path)
        entry = None if key is None else self._skipped.get(key)
        return entry is not None and entry[2:3] == ["missing"] and _file_stamp(key) is None

    def changed(self, path: str | os.PathLike[str]) -> str | None:
        """How the file of cached video ``path`` differs from the one cached (size or modification time), or None
        when it does not, when it no longer exists, when ``path`` is not cached, or for a version-1 cache."""
        key = self.recorded_path(path)
        entry = None if key is None else self.videos.get(key)
        return None if entry is None else _difference(key, entry[5:7])

    def _entry(self, path: str | os.PathLike[str]) -> list[int]:
        key = self.recorded_path(path)
        entry = None if key is None else self.videos.get(key)
        if entry is None:
            if key is not None:  # left out as unreadable
                _, reason, *rest = self._skipped[key]  # version 1 recorded no kind and no file stamp
                if _difference(key, rest[1:3]) is not None:  # e.g. a download finished since
                    raise VideoDecodeError(path, f"changed since the frame cache {self.folder} was built, when it was "
                                                 f"unreadable ({reason}); update it with `adaptkit cache --update`",
                                           kind="stale")
                kind = rest[0] if rest else "corrupt"
                state = "missing" if kind == "missing" else "unreadable"
                raise VideoDecodeError(path, f"{state} when the frame cache {self.folder} was built: {reason}",
                                       kind=kind)
            raise VideoDecodeError(path, f"not in the frame cache {self.folder} (added since it was built, or another "
                                         "annotation file or root: update it with `adaptkit cache --update`)",
                                   kind="not_cached")
        if key not in self._unchanged:
            difference = self.changed(key)
            if difference is not None:
                raise VideoDecodeError(path, f"changed since the frame cache {self.folder} was built ({difference}); "
                                             "update it with `adaptkit cache --update`", kind="stale")
            self._unchanged.add(key)
        return entry

    def num_frames(self, path: str | os.PathLike[str]) -> int:
        """Frames cached for ``path``.

        Raises:
            VideoDecodeError: the video is not in the cache or its file has changed since (kinds ``"not_cached"``,
                ``"stale"``, or the kind it failed with when the cache was built).
        """
        return self._entry(path)[2]

    def frames(self, path: str | os.PathLike[str], indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The cached frames at ``indices`` (clamped to the last frame): uint8 (T, 3, H, W), channels-last memory,
        like :func:`~adaptkit.data.decode_frames`; T = ``len(indices)``.

        Raises:
            VideoDecodeError: as :meth:`num_frames` does, or the cache's chunk file was cut short after it was built.
        """
        chunk, offset, count, height, width = self._entry(path)[:5]
        if chunk not in self._chunks:
            self._chunks[chunk] = np.memmap(self.folder / f"chunk_{chunk:05d}.u8", dtype=np.uint8, mode="r")
        data = self._chunks[chunk][offset : offset + count * height * width * 3]
        if data.size != count * height * width * 3:  # the chunk file was cut short after the cache was built
            raise VideoDecodeError(path, f"its frames in the frame cache {self.folder} are cut short (chunk_{chunk:05d}"
                                         ".u8 is damaged); rebuild the cache with `adaptkit cache`")
        video = data.reshape(count, height, width, 3)
        wanted = np.minimum(np.asarray(indices, dtype=np.int64).reshape(-1), count - 1)
        return torch.from_numpy(video[wanted]).permute(0, 3, 1, 2)  # fancy indexing copies only these frames


class _DecodeJobs(torch.utils.data.Dataset):
    """One video per item, decoded whole: (path, frames in windows, frame count, file stamp, None) or
    (path, [], 0, file stamp, error)."""

    def __init__(self, paths: Sequence[str], backend: str | None, short_side: int, window: int) -> None:
        self.paths, self.backend, self.short_side, self.window = paths, backend, short_side, window

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, list[torch.Tensor], int, tuple[int, int] | None,
                                            VideoDecodeError | None]:
        path = self.paths[i]
        stamp = _file_stamp(path)  # before decoding: a file rewritten meanwhile then reads as changed, not as cached
        try:
            index = probe_video(path)
            parts = [decode_frames(path, np.arange(start, min(start + self.window, index.num_frames)), self.backend,
                                   index=index, short_side=self.short_side)
                     for start in range(0, index.num_frames, self.window)]
        except VideoDecodeError as error:
            return path, [], 0, stamp, error
        return path, parts, index.num_frames, stamp, None


def _as_is(item: tuple) -> tuple:
    return item


def _decoded_videos(paths: Sequence[str], backend: str | None, short_side: int, window: int,
                    workers: int) -> Iterable[tuple[str, list[torch.Tensor], int, tuple[int, int] | None,
                                                    VideoDecodeError | None]]:
    """Decoded videos in the order of ``paths``; with ``workers`` > 0 decoded by a DataLoader's worker processes
    (ordered, so the cache layout does not depend on the worker count)."""
    jobs = _DecodeJobs(paths, backend, short_side, window)
    if workers == 0:
        return (jobs[i] for i in range(len(jobs)))
    return torch.utils.data.DataLoader(jobs, batch_size=None, num_workers=workers, collate_fn=_as_is)


def _video_bytes(entry: list[int]) -> int:
    return entry[2] * entry[3] * entry[4] * 3  # frames x H x W x 3


def _previous_cache(folder: Path, short_side: int) -> tuple[dict[str, list[int]], list[list[str]], int]:
    """For an update: the existing cache's entries and skips, and the first free chunk number. Chunk files that its
    index does not reference (an update cut short) are deleted."""
    old = FrameCache(folder)
    if old.version < 2:
        raise ValueError(f"{folder}: a version-{old.version} frame cache records no file sizes, so changed videos "
                         "cannot be told apart; build it again without update")
    if old.short_side != short_side:
        raise ValueError(f"{folder} stores frames at short side {old.short_side}, not {short_side}: updating it "
                         "would mix sizes; build a new cache in another folder")
    referenced = {entry[0] for entry in old.videos.values()}
    for chunk_file in folder.glob("chunk_*.u8"):
        if int(chunk_file.stem.split("_")[1]) not in referenced:
            chunk_file.unlink()
    return dict(old.videos), [list(entry) for entry in old.skipped], max(referenced, default=-1) + 1


def build_frame_cache(
    videos: Annotations | Iterable[VideoRecord | str | os.PathLike[str]],
    folder: str | os.PathLike[str],
    short_side: int = 256,
    chunk_bytes: int = 2**30,
    backend: str | None = None,
    window: int = 64,
    progress: bool = False,
    workers: int = 0,
    update: bool = False,
) -> FrameCache:
    """Decode every frame of ``videos`` at ``short_side`` (never enlarged) into a new cache in ``folder``.

    Unreadable and missing videos are logged (the missing ones in one line) and listed in the index's ``skipped``
    with their kind; a dataset reading the cache skips them as it would the video files. Disk use: frames x H x W x 3
    bytes per video (a 10 s, 25 fps clip at 256x340 is 65 MB).

    With ``update``, an existing cache in ``folder`` is brought up to date instead of rebuilt: videos whose file is
    unchanged (size and mtime) or gone keep their frames; new, changed and previously unreadable videos are decoded
    into new chunk files; cached videos not in ``videos`` stay. The old frames of a changed video stay on disk,
    unreferenced (:attr:`FrameCache.unreferenced_bytes`; a build without ``update`` reclaims them). The old index
    stays valid until the new one replaces it, so an interrupted update loses nothing.

    Args:
        videos: annotations, records or paths (each video once; repeats are cached once).
        folder: output folder, created; without ``update`` an existing cache in it is replaced.
        short_side: short side of the stored frames, e.g. the training transform's ``resize_size``.
        chunk_bytes: size above which a new chunk file starts (a video is never split).
        backend: decode backend, None = automatic.
        window: frames decoded per call (bounds memory on long videos).
        progress: show a tqdm progress bar.
        workers: processes decoding videos in parallel (0: in this process); the cache is the same either way.
        update: update the cache in ``folder`` (when there is one) rather than replace it.

    Returns:
        The cache, opened for reading.

    Raises:
        ValueError: bad sizes; with ``update``, a cache of another ``short_side`` or a version-1 cache.
        BlockingIOError: another process is building a cache in ``folder`` (one build at a time per folder).
    """
    if short_side < 1 or chunk_bytes < 1 or window < 1 or workers < 0:
        raise ValueError("short_side, chunk_bytes and window must be >= 1, workers >= 0")
    items = videos.records if isinstance(videos, Annotations) else videos
    paths = list(dict.fromkeys(_key(v.path if isinstance(v, VideoRecord) else v) for v in items))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Two builds in one folder would delete or overwrite each other's chunks, and the index would then point at the
    # wrong frames without any error: one build at a time.
    with exclusive_lock(folder / _LOCK, f"the frame cache {folder} is being built by another process (it holds "
                                        f"{folder / _LOCK}); wait for it to finish, or use another folder"):
        return _build(folder, paths, backend, short_side, chunk_bytes, update, window, workers, progress)


def _build(folder: Path, paths: list[str], backend: str | None, short_side: int, chunk_bytes: int, update: bool,
           window: int, workers: int, progress: bool) -> FrameCache:
    from tqdm import tqdm

    entries: dict[str, list[int]] = {}
    skipped: list[list[str]] = []
    chunk = 0
    if update and (folder / _INDEX).is_file():
        entries, skipped, chunk = _previous_cache(folder, short_side)
        listed = len(paths)
        paths = [path for path in paths if path not in entries or _difference(path, entries[path][5:7]) is not None]
        retried = set(paths)
        logger.info("updating the frame cache %s: decoding %d of the %d listed videos (new, changed or unreadable "
                    "before), keeping %d cached videos", folder, len(paths), listed, len(entries.keys() - retried))
        skipped = [entry for entry in skipped if entry[0] not in retried]
    else:
        for old in [folder / _INDEX, *folder.glob("chunk_*.u8")]:
            old.unlink(missing_ok=True)
    offset, missing = 0, []
    out = open(folder / f"chunk_{chunk:05d}.u8", "wb")  # noqa: SIM115 - rotated below
    try:
        for path, parts, num_frames, stamp, error in tqdm(
                _decoded_videos(paths, backend, short_side, window, workers), total=len(paths), desc="cache frames",
                disable=not progress):
            if error is not None:
                if error.kind == "missing":
                    missing.append(path)  # one line for all, below: a class absent on disk is hundreds of files
                else:
                    logger.warning("not caching unreadable video %s: %s", path, error.reason)
                entries.pop(path, None)  # a changed video that no longer decodes
                skipped.append([path, error.reason, error.kind, *(stamp or (-1, -1))])
                continue
            height, width = parts[0].shape[-2:]
            size = num_frames * height * width * 3
            if offset and offset + size > chunk_bytes:
                out.close()
                chunk, offset = chunk + 1, 0
                out = open(folder / f"chunk_{chunk:05d}.u8", "wb")  # noqa: SIM115
            out.writelines(part.permute(0, 2, 3, 1).contiguous().numpy().tobytes() for part in parts)  # (n, H, W, 3)
            entries[path] = [chunk, offset, num_frames, int(height), int(width), *(stamp or (-1, -1))]
            offset += size
    finally:
        out.close()
    if missing:
        logger.warning("not caching %d missing video file(s), recorded as missing (e.g. %s)", len(missing),
                       missing[0])
    if offset == 0:
        (folder / f"chunk_{chunk:05d}.u8").unlink()  # nothing was written to it (e.g. an update with nothing new)
    index_data = {"version": _VERSION, "short_side": short_side, "chunk_bytes": chunk_bytes, "videos": entries,
                  "skipped": skipped}
    tmp = folder / f"{_INDEX}.tmp"
    tmp.write_text(json.dumps(index_data))
    os.replace(tmp, folder / _INDEX)  # the index appears only once every chunk is complete
    return FrameCache(folder)
