"""Frame-exact video decoding into uint8 (T, C, H, W) tensors, decoding only what the requested frames need.

Two backends share one contract: PyAV (a hard dependency, always works, the default) and torchcodec (the optional
``adaptkit[torchcodec]`` extra, which needs FFmpeg's shared libraries, and which alone decodes on a GPU with NVDEC). Frame index ``i`` means the i-th frame shown to a viewer, so frames that an edit
list discards are never counted or returned; frames come out as displayed (a display rotation is applied).

Both backends seek. A :class:`~adaptkit.data.probe.VideoIndex` (one demuxing pass, cached by the datasets) says where
each frame sits, so PyAV seeks to the keyframe before each group of wanted frames, decodes only the packets the
wanted frames need (non-reference pictures nobody asked for, and the ends of GOPs after their last wanted frame, are
dropped), identifies every decoded picture by its timestamp and converts to RGB only the kept ones. torchcodec gets
its scan-free approximate seek mode when the file's header timing is exact and its GOPs closed, its exact mode
otherwise; it decodes every picture from the keyframe on (it has no way to skip one).
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import av
import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from .probe import VideoDecodeError, VideoIndex, hold_back, open_video_stream, probe_video

__all__ = [
    "DECODE_BACKENDS",
    "GPUDecodingUnavailable",
    "VideoDecodeError",
    "check_gpu_decoding",
    "count_frames",
    "decode_frames",
    "default_backend",
    "resized_shape",
    "torchcodec_available",
]


def _check_indices(indices: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    array = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices).reshape(-1)
    if array.size == 0:
        raise ValueError("indices must not be empty")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"indices must be non-negative, got {int(array.min())}")
    return array.astype(np.int64)


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``short_side`` as torchvision's ``Resize(short_side)`` does
    (long side truncated), or unchanged when ``short_side`` is None or would enlarge the frame."""
    if short_side is None or min(height, width) <= short_side:
        return height, width
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def _rotate(video: torch.Tensor, rotation: int) -> torch.Tensor:
    # FFmpeg's rotation is counter-clockwise, as is torch.rot90 from the H axis towards the W axis.
    turns = rotation // 90 % 4
    if turns == 0:
        return video
    return torch.rot90(video, turns, dims=(-2, -1)).contiguous(memory_format=torch.channels_last)


def _stored_shape(height: int, width: int, rotation: int, short_side: int | None) -> tuple[int, int]:
    """Output size in the stored orientation such that, once rotated, the displayed short side is ``short_side``."""
    if rotation % 180:
        displayed = resized_shape(width, height, short_side)
        return displayed[1], displayed[0]
    return resized_shape(height, width, short_side)


def _decoded(container: Any, stream: Any, wanted_pts: set[int], closed_gops: bool) -> Iterator[Any]:
    """Decoded frames from the demuxer's position until every packet of ``wanted_pts`` went into the decoder, which
    is then drained; only the packets that the wanted frames need are decoded.

    - Non-reference pictures (most B-frames) that are not wanted are dropped by the decoder (``skip_frame``): no
      other picture needs them.
    - With closed GOPs, packets are held back until a wanted packet of the same GOP shows that they are needed; the
      packets after a GOP's last wanted one, and GOPs without a wanted frame, are dropped when the next keyframe
      arrives. No picture after a keyframe refers to one before it (the same promise that seeking relies on), so
      the decoder goes on from the keyframe as if the dropped packets had never been in the file. (An open GOP's
      leading pictures refer back across the keyframe: there every packet goes in, as in plain decoding.)
    - Demuxing stops once every wanted packet is in, or where no wanted packet can follow (a seek landed past one:
      the caller sees it missing): at the first keyframe shown after them all, the second one with open GOPs.
    """
    context = stream.codec_context
    unfed = set(wanted_pts)
    last_wanted = max(unfed)
    held: list[Any] = []
    keyframes_past = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            break  # end of the stream
        if packet.is_keyframe:
            if closed_gops:
                held.clear()
            keyframes_past += packet.pts is not None and packet.pts > last_wanted
            if keyframes_past == (1 if closed_gops else 2):
                break
        if packet.pts in unfed:
            context.skip_frame = "NONREF"
            for earlier in held:
                yield from context.decode(earlier)
            held.clear()
            context.skip_frame = "DEFAULT"
            yield from context.decode(packet)
            unfed.discard(packet.pts)
            if not unfed:
                break
        elif closed_gops:
            held.append(packet)
        else:
            context.skip_frame = "NONREF"
            yield from context.decode(packet)
    yield from context.decode(None)  # drain the decoder's delayed frames


_swscale = threading.local()  # per thread: a scaler and a converter whose swscale contexts last across frames


def _reformatters() -> tuple[Any, Any, dict[str, int]]:
    """This thread's (scaler, converter, keyword arguments); made anew in a forked process (a DataLoader worker),
    which must not use its parent's swscale contexts. PyAV >= 17 scales on a thread pool by default: one thread
    (DataLoader workers already use the cores, and a pool does not survive a fork); older PyAV has no pool."""
    if getattr(_swscale, "pid", None) != os.getpid():
        from av.video.reformatter import VideoReformatter

        scaler, converter = VideoReformatter(), VideoReformatter()
        options = {"threads": 1}
        try:
            converter.reformat(av.VideoFrame(2, 2, "yuv420p"), format="rgb24", **options)
        except TypeError:  # PyAV < 17
            options = {}
        _swscale.pid, _swscale.reformat = os.getpid(), (scaler, converter, options)
    return _swscale.reformat


class _Sink:
    """The output (U, H, W, C) uint8, allocated once; each kept frame is resized by swscale (if asked), converted to
    RGB and copied into its slot: one plain copy per frame, no stacking, no transposing copy."""

    def __init__(self, wanted: np.ndarray, height: int, width: int) -> None:
        # Reused: a new swscale context per frame cost more than the conversion.
        self.scaler, self.converter, self.options = _reformatters()
        self.slots = {frame: slot for slot, frame in enumerate(wanted.tolist())}
        self.out = torch.empty((len(wanted), height, width, 3), dtype=torch.uint8)
        self.filled: set[int] = set()

    def keep(self, shown: int, frame: Any) -> None:
        height, width = self.out.shape[1:3]
        if (frame.height, frame.width) != (height, width):
            # Scale in the stored format, then convert at the new size. swscale's combined scale-and-convert path
            # darkens 8-bit 4:2:0 video by 1-2 levels; this one is unbiased against a full-size decode resized by
            # torchvision (tests/data/test_decode.py), and about 4x faster per frame.
            frame = self.scaler.reformat(frame, width=width, height=height, interpolation="BILINEAR", **self.options)
        rgb = self.converter.reformat(frame, format="rgb24", **self.options)
        self.out[self.slots[shown]] = torch.from_numpy(rgb.to_ndarray())
        self.filled.add(shown)


def _runs(frames: list[int], far: int) -> list[list[int]]:
    """Sorted display indices split where consecutive ones are ``far`` or more apart: a keyframe surely lies in
    between, so a seek beats demuxing through the gap."""
    runs = [[frames[0]]]
    for frame in frames[1:]:
        if frame - runs[-1][-1] >= far:
            runs.append([frame])
        else:
            runs[-1].append(frame)
    return runs


def _pyav_decode(path: str, sink: _Sink, index: VideoIndex, threads: int) -> None:
    """Fill ``sink`` with its frames, seeking to the keyframe before each run of them; frames a seek misses (an
    imprecise container index) stay unfilled for the caller to decode from the start."""
    container, stream = open_video_stream(path, threads, index.reorder_depth)
    # Any key_interval consecutive frames hold a keyframe, so a target that far ahead is worth a seek.
    far = index.key_interval
    decoded = 0
    try:
        with container:
            for number, run in enumerate(_runs(sorted(sink.slots), far)):
                for attempt in range(2):
                    if attempt:  # some demuxers index keyframes by decode time: step back one interval and more
                        back = max(run[0] - 2 * far, 0)
                        container.seek(int(index.pts_of(np.array([back]))[0]) - index.seek_margin, stream=stream)
                    elif number or run[0] >= far:
                        container.seek(int(index.pts_of(np.array([run[0]]))[0]), stream=stream)
                    hold_back(stream, index.reorder_depth)  # a seek's flush may have reset it
                    wanted_pts = set(index.pts_of(np.asarray(run)).tolist())
                    for frame in _decoded(container, stream, wanted_pts, index.closed_gops):
                        decoded += 1
                        shown = index.frame_at(frame.pts) if frame.pts is not None else -1
                        if shown in sink.slots and shown not in sink.filled:
                            sink.keep(shown, frame)  # RGB (and resizing) only for kept frames
                    if all(frame in sink.filled for frame in run):
                        break
                else:
                    return  # the caller decodes from the start
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"decoding failed after {decoded} frames: {error}") from error


def _pyav_sequential(path: str, sink: _Sink, threads: int, reorder_depth: int) -> None:
    # The reference path: decode from the start and count frames (libavcodec drops frames of discard packets).
    container, stream = open_video_stream(path, threads, reorder_depth)
    last = max(sink.slots)
    count = 0
    try:
        with container:
            for frame in container.decode(stream):
                if count in sink.slots:
                    sink.keep(count, frame)
                count += 1
                if count > last:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"decoding failed after {count} frames: {error}") from error


def _pyav_frames(path: str, unique: np.ndarray, index: VideoIndex, short_side: int | None, threads: int,
                 seek: bool) -> torch.Tensor:
    sink = _Sink(unique, *_stored_shape(index.height, index.width, index.rotation, short_side))
    if seek:
        _pyav_decode(path, sink, index, threads)
    if len(sink.filled) < len(unique):  # no timestamps, or an imprecise seek: count from the start
        _pyav_sequential(path, sink, threads, index.reorder_depth)
    missing = [i for i in unique.tolist() if i not in sink.filled]
    if missing:
        raise VideoDecodeError(path, f"decoding failed: frames {missing[:5]} of {index.num_frames} not decodable")
    return _rotate(sink.out.permute(0, 3, 1, 2), index.rotation)  # (U, C, H, W), channels-last memory


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
def _torchcodec_probe() -> tuple[type | None, str]:
    """(torchcodec's VideoDecoder, "") where it works, else (None, why not)."""
    # Memoised capability probe. Importing torchcodec does not load its FFmpeg libraries (they load lazily and may
    # be missing or of an unsupported version), so decode a tiny video; any failure means "use PyAV".
    try:
        from torchcodec.decoders import VideoDecoder

        VideoDecoder(_tiny_mp4(), seek_mode="exact", num_ffmpeg_threads=1).get_frames_at(indices=[0])
    except Exception as error:  # noqa: BLE001 - whatever breaks, torchcodec is unusable here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, f"{type(error).__name__}: {reason}"[:300]
    return VideoDecoder, ""


def _torchcodec_decoder_class() -> type | None:
    return _torchcodec_probe()[0]


def torchcodec_available() -> bool:
    """Whether torchcodec imports and its FFmpeg libraries load."""
    return _torchcodec_decoder_class() is not None


class GPUDecodingUnavailable(RuntimeError):
    """GPU decoding was asked for where it cannot run; the one-line message says what is missing."""


@functools.cache
def _gpu_decoding_problem(device: str) -> str | None:
    if not torch.cuda.is_available():
        return (f"GPU decoding on {device!r} needs a CUDA device, and torch.cuda.is_available() is False here; "
                "decode on the CPU instead")
    decoder_class = _torchcodec_decoder_class()
    if decoder_class is None:
        return ("GPU decoding needs torchcodec with FFmpeg's libraries: pip install 'adaptkit[torchcodec]' and "
                "apt-get install -y --no-install-recommends ffmpeg")
    buffer = io.BytesIO()  # NVDEC decodes H.264 on every generation; tiny frames are below its minimum size
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((128, 128, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    try:
        decoder_class(buffer.getvalue(), device=device).get_frames_at(indices=[0])
    except Exception as error:  # noqa: BLE001 - any failure means this torchcodec cannot decode on CUDA
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return (f"this torchcodec cannot decode on {device!r} ({first_line}); install a CUDA-enabled torchcodec "
                "matching torch's CUDA version")
    return None


def check_gpu_decoding(device: str | torch.device = "cuda") -> None:
    """Make sure frames can be decoded on ``device`` (NVDEC through torchcodec); memoised per device.

    Raises:
        GPUDecodingUnavailable: no CUDA device, no working torchcodec, or a torchcodec built without CUDA. The
            message is one line saying which.
    """
    problem = _gpu_decoding_problem(str(torch.device(device)))
    if problem is not None:
        raise GPUDecodingUnavailable(problem)


def _torchcodec_frames(path: str, unique: np.ndarray, index: VideoIndex, short_side: int | None, threads: int,
                       seek: bool, device: str = "cpu") -> torch.Tensor:
    decoder_class = _torchcodec_decoder_class()
    if decoder_class is None:
        raise RuntimeError(f"torchcodec is not installed or cannot load its FFmpeg libraries ({_torchcodec_probe()[1]})")
    transforms = []
    # torchcodec rotates before its transforms: the size is the displayed one.
    displayed = (index.width, index.height) if index.rotation % 180 else (index.height, index.width)
    shape = resized_shape(*displayed, short_side)
    if shape != displayed:
        from torchcodec.transforms import Resize

        transforms = [Resize(size=shape)]
    # Approximate mode skips the scan of the whole file. It is right where the header's timing is exact and every GOP
    # is closed: it seeks to the keyframe before a frame's pts, and an open GOP's leading pictures, shown before their
    # keyframe, need the one before it (approximate mode then returned the next frame instead, with no error).
    approximate = seek and index.exact_header and index.closed_gops
    options = dict(stream_index=index.stream_index, num_ffmpeg_threads=threads, device=device,
                   seek_mode="approximate" if approximate else "exact")
    try:
        try:
            decoder = decoder_class(path, **options, transforms=transforms or None)
        except TypeError:  # a torchcodec older than decoder-side transforms: resize after decoding
            decoder = decoder_class(path, **options)
            frames = decoder.get_frames_at(indices=unique.tolist()).data
            return F.resize(frames, list(shape), antialias=True) if transforms else frames
        return decoder.get_frames_at(indices=unique.tolist()).data  # (U, C, H, W), rotated as displayed
    except (RuntimeError, ValueError, IndexError) as error:
        raise VideoDecodeError(path, f"decoding failed: {error}") from error


Backend = Callable[[str, np.ndarray, VideoIndex, "int | None", int, bool], torch.Tensor]

# name -> decode(path, sorted unique indices, index, short_side, threads, seek) -> (U, C, H, W).
# A registry so that a new backend is one entry.
DECODE_BACKENDS: dict[str, Backend] = {"pyav": _pyav_frames, "torchcodec": _torchcodec_frames}


def default_backend() -> str:
    """The backend used when none is named: ``"pyav"``.

    Measured (``python -m benchmarks.data_loading``): on CPU, PyAV with keyframe seeking and non-reference frames
    skipped decodes a training clip faster than torchcodec in most file x sampler cells (it decodes every frame from
    the keyframe on). Name ``"torchcodec"`` to use it; GPU decoding (NVDEC) needs it.
    """
    return "pyav"


def _backend(name: str | None) -> Backend:
    name = default_backend() if name is None else name
    if name not in DECODE_BACKENDS:
        raise ValueError(f"unknown decode backend {name!r}; valid: {sorted(DECODE_BACKENDS)}")
    return DECODE_BACKENDS[name]


def count_frames(path: str | os.PathLike[str], backend: str | None = None) -> int:
    """Count the frames of a video exactly (by demuxing: headers lie).

    Args:
        path: video file (mp4, webm, mkv, ...).
        backend: accepted for symmetry with :func:`decode_frames` and checked; counting always demuxes with PyAV.

    Returns:
        The number of frames a viewer sees (edit-list-discarded frames excluded).

    Raises:
        VideoDecodeError: missing, unreadable, truncated or empty file, or no video stream (cover art is none).
    """
    _backend(backend)
    return probe_video(path).num_frames


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray | torch.Tensor,
    backend: str | None = None,
    *,
    index: VideoIndex | None = None,
    short_side: int | None = None,
    threads: int = 1,
    seek: bool = True,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Decode the frames at ``indices`` (any order, repeats allowed), decoding only what they need.

    Indices past the last frame are clamped to the last frame, so a header that over-counts cannot crash training.

    Args:
        path: video file.
        indices: non-negative frame indices, any shape (flattened), e.g. the union of all views of one video.
        backend: ``"pyav"`` or ``"torchcodec"``; None picks :func:`default_backend`.
        index: the file's :func:`~adaptkit.data.probe.probe_video` result, if cached; None probes the file.
        short_side: resize in the decoder so that the displayed short side is this many pixels, as
            ``torchvision``'s ``Resize(short_side)`` sizes it; never enlarges. None keeps the stored size.
        threads: FFmpeg decoding threads; more than 1 only pays when a worker has spare cores.
        seek: False decodes from the start of the file (the slow reference path, kept for benchmarks and tests).
            Files whose timestamps are in decoding order (AVI with B-frames) are always decoded that way, by PyAV.
        device: where frames are decoded and returned; a CUDA device decodes with NVDEC and needs
            ``backend="torchcodec"`` (see :func:`check_gpu_decoding`).

    Returns:
        uint8 tensor (len(indices), 3, H, W), RGB, as displayed (the display rotation applied; a non-square pixel
        aspect ratio is not: frames keep their stored width), frame ``k`` being the frame at ``indices[k]``. Its
        memory is channels-last (a (T, H, W, 3) buffer seen as (T, 3, H, W), as decoders produce frames and
        torchcodec returns them): no transposing copy; torchvision's uint8 resize is fastest on this layout.

    Raises:
        VideoDecodeError: missing, corrupt or truncated file, no video stream, or no decodable frame.
        ValueError: empty, negative or non-integer indices, an unknown backend, or a GPU device with PyAV.
        GPUDecodingUnavailable: a CUDA device without CUDA, torchcodec, or a CUDA-enabled torchcodec.

    Example:
        >>> clip = decode_frames("video.mp4", [0, 8, 16, 8])  # doctest: +SKIP
        >>> clip.shape  # doctest: +SKIP
        torch.Size([4, 3, 256, 340])
    """
    path = os.fspath(path)
    decode = _backend(backend)
    requested = _check_indices(indices)
    if short_side is not None and short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    device = torch.device(device)
    if device.type != "cpu":
        if decode is not DECODE_BACKENDS["torchcodec"]:
            raise ValueError(f"decoding on {device} needs backend='torchcodec' (PyAV decodes on the CPU only)")
        check_gpu_decoding(device)
    index = probe_video(path) if index is None else index
    unique, inverse = np.unique(np.minimum(requested, index.num_frames - 1), return_inverse=True)
    try:
        if index.decode_order_pts:  # pictures cannot be told apart by timestamp: count them from the start, with PyAV
            batch = _pyav_frames(path, unique, index, short_side, max(int(threads), 1), False).to(device)
        elif device.type != "cpu":
            batch = _torchcodec_frames(path, unique, index, short_side, 1, seek, device=str(device))
        else:
            batch = decode(path, unique, index, short_side, max(int(threads), 1), seek)  # (U, C, H, W)
    except VideoDecodeError as error:
        if error.kind == "corrupt" and not os.path.exists(path):  # deleted since it was probed (a given index)
            raise VideoDecodeError(path, error.reason, kind="missing") from error  # the decoder only says "cannot open"
        raise
    if len(unique) == len(requested) and (unique == requested).all():
        return batch  # sorted without repeats, as samplers mostly ask: no gather copy
    return batch[torch.from_numpy(inverse.reshape(-1)).to(batch.device)]  # (T, C, H, W), the memory layout kept
