"""Frame-exact video decoding into uint8 (T, C, H, W) tensors.

Two backends share one contract: torchcodec when it imports and its FFmpeg libraries load, PyAV otherwise. PyAV is
a hard dependency and always works. Frame index ``i`` means the i-th frame shown to a viewer, so frames that an edit
list discards are never counted or returned.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
import torch

__all__ = [
    "DECODE_BACKENDS",
    "VideoDecodeError",
    "count_frames",
    "decode_frames",
    "default_backend",
    "torchcodec_available",
]


class VideoDecodeError(RuntimeError):
    """A video file is missing, unreadable, corrupt or truncated. The message starts with the path."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_indices(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    array = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices).reshape(-1)
    if array.size == 0:
        raise ValueError("indices must not be empty")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"indices must be non-negative, got {int(array.min())}")
    return array.astype(np.int64)


def _open_video_stream(path: str) -> tuple[Any, Any]:
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"cannot open: {error}") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    stream = container.streams.video[0]
    # One decode thread per DataLoader worker: frame threading was slower than one thread on 2 cores.
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    return container, stream


def _pyav_count(path: str) -> int:
    # Headers lie: WebM carries no frame count and MP4 counts edit-list-discarded samples. Demuxing is cheap.
    container, stream = _open_video_stream(path)
    # Only an MP4/MOV sample table is an exact promise of the packet count (AVI indexes list empty drop-frames).
    declared = stream.frames if "mp4" in container.format.name else 0
    packets, count = 0, 0
    try:
        with container:
            for packet in container.demux(stream):
                if packet.size > 0:
                    packets += 1
                    count += not packet.is_discard
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"demuxing failed: {error}") from error
    if declared > packets:  # the sample table outlives the data: the file was cut short
        raise VideoDecodeError(path, f"truncated: header declares {declared} frames, file holds {packets}")
    if count == 0:
        raise VideoDecodeError(path, "no video frames")
    return count


def _pyav_decode(path: str, indices: np.ndarray) -> torch.Tensor:
    wanted = set(indices.tolist())
    last_wanted = max(wanted)
    frames: dict[int, np.ndarray] = {}
    last_frame = None
    count = 0
    container, stream = _open_video_stream(path)
    try:
        with container:
            # Sequential decoding is the frame-exact way; libavcodec itself drops frames of discard packets.
            for frame in container.decode(stream):
                if count in wanted:
                    frames[count] = frame.to_ndarray(format="rgb24")
                last_frame = frame
                count += 1
                if count > last_wanted:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"decoding failed after {count} frames: {error}") from error
    if last_frame is None:
        raise VideoDecodeError(path, "no decodable video frames")
    if last_wanted >= count and count - 1 not in frames:  # past-the-end indices clamp to the last frame
        frames[count - 1] = last_frame.to_ndarray(format="rgb24")
    clamped = np.minimum(indices, count - 1)
    video = np.stack([frames[i] for i in clamped.tolist()])  # (T, H, W, C)
    return torch.from_numpy(video).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)


def _tiny_mp4() -> bytes:
    """A one-frame MP4 made with PyAV, to check that a decoder really works."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@functools.cache
def _torchcodec_decoder_class() -> type | None:
    # Memoised capability probe. Importing torchcodec does not load its FFmpeg libraries (they load lazily and may
    # be missing or of an unsupported version), so decode a tiny video; any failure means "use PyAV".
    try:
        from torchcodec.decoders import VideoDecoder

        VideoDecoder(_tiny_mp4(), seek_mode="exact", num_ffmpeg_threads=1).get_frames_at(indices=[0])
    except Exception:  # noqa: BLE001 - whatever breaks, torchcodec is unusable here
        return None
    return VideoDecoder


def torchcodec_available() -> bool:
    """Whether torchcodec imports and its FFmpeg libraries load."""
    return _torchcodec_decoder_class() is not None


def _torchcodec_open(path: str) -> Any:
    decoder_class = _torchcodec_decoder_class()
    if decoder_class is None:
        raise RuntimeError("torchcodec is not installed or cannot load its FFmpeg libraries")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    try:
        # "exact" scans the file, so the frame count and indices ignore edit-list-discarded frames.
        return decoder_class(path, seek_mode="exact", num_ffmpeg_threads=1)
    except (RuntimeError, ValueError, OSError) as error:
        raise VideoDecodeError(path, f"cannot open: {error}") from error


def _torchcodec_count(path: str) -> int:
    count = len(_torchcodec_open(path))
    if count == 0:
        raise VideoDecodeError(path, "no video frames")
    return count


def _torchcodec_decode(path: str, indices: np.ndarray) -> torch.Tensor:
    decoder = _torchcodec_open(path)
    count = len(decoder)
    if count == 0:
        raise VideoDecodeError(path, "no video frames")
    # torchcodec sorts and de-duplicates; ask for unique frames and map back to the requested order.
    unique, inverse = np.unique(np.minimum(indices, count - 1), return_inverse=True)
    try:
        batch = decoder.get_frames_at(indices=unique.tolist()).data  # (U, C, H, W)
    except (RuntimeError, ValueError, IndexError) as error:
        raise VideoDecodeError(path, f"decoding failed: {error}") from error
    return batch[torch.from_numpy(inverse.reshape(-1))].contiguous()  # (T, C, H, W)


# name -> (count_frames, decode_frames). A registry so that a new backend is one entry.
DECODE_BACKENDS: dict[str, tuple[Callable[[str], int], Callable[[str, np.ndarray], torch.Tensor]]] = {
    "pyav": (_pyav_count, _pyav_decode),
    "torchcodec": (_torchcodec_count, _torchcodec_decode),
}


def default_backend() -> str:
    """The backend used when none is named: ``"torchcodec"`` if available, else ``"pyav"``."""
    return "torchcodec" if torchcodec_available() else "pyav"


def _backend(name: str | None) -> tuple[Callable[[str], int], Callable[[str, np.ndarray], torch.Tensor]]:
    name = default_backend() if name is None else name
    if name not in DECODE_BACKENDS:
        raise ValueError(f"unknown decode backend {name!r}; valid: {sorted(DECODE_BACKENDS)}")
    return DECODE_BACKENDS[name]


def count_frames(path: str | os.PathLike[str], backend: str | None = None) -> int:
    """Count the frames of a video exactly (by demuxing when the header has no or a wrong count).

    Args:
        path: video file (mp4, webm, mkv, ...).
        backend: ``"pyav"`` or ``"torchcodec"``; None picks :func:`default_backend`.

    Returns:
        The number of frames a viewer sees (edit-list-discarded frames excluded).

    Raises:
        VideoDecodeError: missing, unreadable or empty file.
    """
    return _backend(backend)[0](os.fspath(path))


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    backend: str | None = None,
) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, repeats allowed) in one pass over the file.

    Indices past the last frame are clamped to the last frame, so a header that over-counts cannot crash training.

    Args:
        path: video file.
        indices: non-negative frame indices, any shape (flattened), e.g. the union of all views of one video.
        backend: ``"pyav"`` or ``"torchcodec"``; None picks :func:`default_backend`.

    Returns:
        uint8 tensor (len(indices), 3, H, W), RGB, frame ``k`` being the frame at ``indices[k]``.

    Raises:
        VideoDecodeError: missing, corrupt or truncated file, or no decodable frame.
        ValueError: empty, negative or non-integer indices.

    Example:
        >>> clip = decode_frames("video.mp4", [0, 8, 16, 8])  # doctest: +SKIP
        >>> clip.shape  # doctest: +SKIP
        torch.Size([4, 3, 256, 340])
    """
    return _backend(backend)[1](os.fspath(path), _check_indices(indices))
