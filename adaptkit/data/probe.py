"""One demuxing pass over a video file: the exact frame count, where each frame sits in time, where seeking lands.

The result, a :class:`VideoIndex`, is what lets the decoders seek to the keyframe before a clip instead of decoding
from the start of the file, and still say exactly which frame each decoded picture is. Probing reads packets only (no
decoding), a few milliseconds per file; datasets keep the index of constant-frame-rate files in shared memory so each
file is probed once across epochs and DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

__all__ = [
    "DECODE_ERROR_KINDS",
    "ROW_WIDTH",
    "TRUNCATION_TOLERANCE",
    "VideoDecodeError",
    "VideoIndex",
    "open_video_stream",
    "probe_video",
]

# A Matroska/WebM file whose frames end more than this share of its declared length (and more than two frame
# durations) before it is treated as truncated. 10%: an audio track a little longer than the video must not count.
TRUNCATION_TOLERANCE = 0.10


# Why a video cannot be read, as skip reports name it: kind -> the words a report uses.
DECODE_ERROR_KINDS = {
    "missing": "missing",
    "empty": "empty file (0 bytes)",
    "not_a_file": "a folder, not a video file",
    "no_video": "no video stream or frames",
    "corrupt": "corrupt or truncated",
    "not_cached": "not in the frame cache",
    "stale": "changed since the frame cache was built",
    "window": "frame window starts past the video's last frame",  # an annotation's window (Diving-48) vs the file
}


class VideoDecodeError(RuntimeError):
    """A video file is missing, unreadable, corrupt or truncated, or shorter than its record's frame window says. The
    message starts with the path.

    Attributes:
        path: the video file.
        reason: what went wrong, in detail (e.g. FFmpeg's message).
        kind: the class of failure, a key of :data:`DECODE_ERROR_KINDS` (``"corrupt"`` unless the raiser knows better).

    Raises:
        ValueError: on construction, if ``kind`` is not a key of :data:`DECODE_ERROR_KINDS`.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, kind: str = "corrupt") -> None:
        if kind not in DECODE_ERROR_KINDS:
            raise ValueError(f"kind must be one of {sorted(DECODE_ERROR_KINDS)}, got {kind!r}")
        self.path = os.fspath(path)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:  # DataLoader workers pickle errors: keep the three fields
        return type(self), (self.path, self.reason, self.kind)


@dataclass(frozen=True)
class VideoIndex:
    """Where the shown frames of a video's stream sit, in the stream's time base.

    Attributes:
        num_frames: frames a viewer sees (edit-list-discarded frames excluded).
        stream_index: absolute index of the video stream (cover-art streams are never chosen).
        height: stored frame height in pixels (before the display rotation).
        width: stored frame width in pixels.
        first_pts: pts of frame 0.
        pts_step: pts distance between frames when the frame rate is constant, else 0 (then ``pts`` lists them).
        key_interval: the largest distance, in frames, between consecutive keyframes: a seek to a frame more than
            this (plus ``seek_margin``) past the decoder's position surely skips work.
        seek_margin: how far, in pts units, to seek before a target so that the demuxer, which may index keyframes
            by decode time, lands on a keyframe at or before it.
        rotation: display rotation in degrees, counter-clockwise (FFmpeg's convention), a multiple of 90.
        exact_header: the header's timing is exact (constant frame rate from pts 0, nothing discarded), so
            torchcodec's approximate seek mode finds each frame's time (frame-exact with closed GOPs too).
        closed_gops: no packet that follows a keyframe in decoding order is shown before it (no open-GOP leading
            pictures, which refer back across the keyframe), so the packets between a GOP's last needed one and the
            next keyframe need not be decoded.
        reorder_depth: the most pictures that precede one in decoding order and follow it in display order: how
            many the decoder must hold back to output frames in display order.
        decode_order_pts: the packets' timestamps count them in decoding order instead of saying when each picture
            is shown (AVI with B-frames: the container has no presentation times), so a decoded picture cannot be
            identified by its timestamp; the decoders then count frames from the start instead of seeking.
        pts: the shown frames' pts in display order, only for variable frame rate (else None).
    """

    num_frames: int
    stream_index: int
    height: int
    width: int
    first_pts: int
    pts_step: int
    key_interval: int
    seek_margin: int
    rotation: int = 0
    exact_header: bool = False
    closed_gops: bool = False
    reorder_depth: int = 0
    decode_order_pts: bool = False
    pts: np.ndarray | None = None

    def pts_of(self, frames: np.ndarray) -> np.ndarray:
        """pts of display indices ``frames`` (int64 array)."""
        if self.pts is not None:
            return self.pts[frames]
        return self.first_pts + frames.astype(np.int64) * self.pts_step

    def frame_at(self, pts: int) -> int:
        """Display index of the frame shown at ``pts``, or -1 when no frame has exactly this pts."""
        if self.pts is not None:
            position = int(np.searchsorted(self.pts, pts))
            return position if position < len(self.pts) and self.pts[position] == pts else -1
        offset, remainder = divmod(pts - self.first_pts, self.pts_step)
        return int(offset) if remainder == 0 and 0 <= offset < self.num_frames else -1

    def to_row(self) -> list[int] | None:
        """Integers for a shared-memory table, or None when the index needs its pts array (variable frame rate)."""
        if self.pts is not None:
            return None
        return [self.num_frames, self.stream_index, self.height, self.width, self.first_pts, self.pts_step, self.key_interval,
                self.seek_margin, self.rotation, int(self.exact_header), int(self.closed_gops), self.reorder_depth,
                int(self.decode_order_pts)]

    @classmethod
    def from_row(cls, row: list[int]) -> VideoIndex:
        """Inverse of :meth:`to_row`."""
        return cls(*row[:9], exact_header=bool(row[9]), closed_gops=bool(row[10]), reorder_depth=row[11],
                   decode_order_pts=bool(row[12]))


ROW_WIDTH = 13  # len(VideoIndex.to_row())


def _is_cover_art(stream: Any) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


# Opening a file normally makes FFmpeg decode its first pictures to fill in codec details (avformat_find_stream_info):
# about 0.5 ms per open at 340x256 and 7 ms at 720p, paid on every clip. MP4/MOV/MKV/WebM headers hold what the decoder
# needs (size, codec configuration), the decoder reads the rest from the bitstream, and the probe measures the one
# thing the trial decoding guesses (the reorder depth), so no decoder may open during probing: an empty whitelist.
# PyAV releases that cannot set the reorder depth (before 18) open files the usual way.
_NO_TRIAL_DECODING = {"codec_whitelist": "none"} if hasattr(av.video.codeccontext.VideoCodecContext, "reorder_depth") else {}


def _open(path: str, options: dict[str, str]) -> Any:
    try:
        return av.open(path, options=options)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"cannot open: {error}") from error


def hold_back(stream: Any, reorder_depth: int) -> None:
    """Make the decoder of ``stream`` hold back at least ``reorder_depth`` pictures (after opening or a seek), so that
    no picture comes out before one shown earlier and gets dropped as out of order."""
    context = stream.codec_context
    if reorder_depth > getattr(context, "reorder_depth", reorder_depth):
        context.reorder_depth = reorder_depth


def open_video_stream(path: str, threads: int = 1, reorder_depth: int = 0) -> tuple[Any, Any]:
    """Open ``path`` with PyAV and return (container, first real video stream); cover-art pictures do not count.

    Files are opened without FFmpeg's trial decoding (a file whose header lacks the frame size is opened again with
    it); ``reorder_depth`` (:attr:`VideoIndex.reorder_depth`) tells the decoder how many pictures to hold back.

    Raises:
        VideoDecodeError: missing or unreadable file, or no video stream.
    """
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a folder, not a video file", kind="not_a_file")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found", kind="missing")
    if os.path.getsize(path) == 0:  # e.g. a download that never started; FFmpeg would only say "invalid data"
        raise VideoDecodeError(path, "empty file (0 bytes)", kind="empty")
    container = _open(path, _NO_TRIAL_DECODING)
    if _NO_TRIAL_DECODING and any(s.codec_context is None or s.width == 0 or s.height == 0
                                  for s in container.streams.video):
        container.close()  # e.g. MPEG-TS or raw H.264: the size comes from decoding
        container = _open(path, {})
    if any(s.codec_context is None for s in container.streams.video):
        container.close()  # a header cut short (e.g. inside an MP4's moov box): a stream without codec parameters
        raise VideoDecodeError(path, "truncated: the video stream's header is incomplete")
    streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not streams:
        container.close()
        reason = "no video stream (only cover art)" if container.streams.video else "no video stream"
        raise VideoDecodeError(path, reason, kind="no_video")
    stream = streams[0]
    hold_back(stream, reorder_depth)
    if threads > 1:  # frame + slice threading; one thread per worker is best when workers fill the cores
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
    else:
        stream.thread_type = "NONE"
        stream.codec_context.thread_count = 1
    return container, stream


def _declared_seconds(container: Any, stream: Any) -> float | None:
    tag = stream.metadata.get("DURATION")  # Matroska's per-track duration, written when the muxer finishes
    if tag:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None if container.duration is None else container.duration / 1e6


def _rotation(frame: Any) -> int:
    return int(round((frame.rotation or 0) / 90)) * 90 % 360


def probe_video(path: str | os.PathLike[str]) -> VideoIndex:
    """Demux a video once and index its shown frames (see :class:`VideoIndex`).

    Headers lie: WebM carries no frame count and MP4 counts edit-list-discarded samples, so frames are counted from
    the packets. Besides unreadable files, three kinds of truncation are caught: an MP4 whose sample table promises
    more packets than the file holds, a file that ends inside its last packet (a fragmented MP4 declares no count), and
    a Matroska/WebM file whose frames end more than :data:`TRUNCATION_TOLERANCE` (10%) of its declared length (the
    declared end less the first frame's time), and more than two frame durations, before the declared end.

    Raises:
        VideoDecodeError: missing, unreadable, truncated or empty file, a folder, or no (non-cover-art) video stream.
    """
    path = os.fspath(path)
    container, stream = open_video_stream(path)
    # Only an MP4/MOV sample table is an exact promise of the packet count (AVI indexes list empty drop-frames).
    declared = stream.frames if "mp4" in container.format.name else 0
    shown, durations, key_pts, key_margin, packets, discarded, decode_order = [], [], [], [], 0, 0, []
    last_cut_short = False
    rotation, closed_gops = None, True
    try:
        with container:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                last_cut_short = packet.is_corrupt  # FFmpeg flags a packet the file ends inside
                if rotation is None:
                    # The display matrix reaches PyAV only on decoded frames: decode until the first one comes out.
                    decoded = stream.codec_context.decode(packet)
                    rotation = _rotation(decoded[0]) if decoded else None
                if packet.pts is None:
                    raise VideoDecodeError(path, "packets without timestamps cannot be indexed")
                decode_order.append(packet.pts)
                if packet.is_keyframe:
                    key_pts.append(packet.pts)
                    key_margin.append(packet.pts - packet.dts if packet.dts is not None else 0)
                elif key_pts and packet.pts < key_pts[-1]:
                    closed_gops = False  # a leading picture: shown before the keyframe it follows
                if packet.is_discard:
                    discarded += 1
                else:
                    shown.append(packet.pts)
                    durations.append(packet.duration or 0)
            declared_seconds = _declared_seconds(container, stream)
            # AVI has no presentation times: FFmpeg numbers its packets, in decoding order. With B-frames (known once
            # the decoder has seen the stream's header, i.e. after the first picture above) that is not display order.
            decode_order_pts = "avi" in container.format.name.split(",") and bool(stream.codec_context.has_b_frames)
            time_base = stream.time_base
            stream_index, height, width = stream.index, stream.height, stream.width
    except (av.error.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"demuxing failed: {error}") from error
    if declared > packets:  # the sample table outlives the data: the file was cut short
        raise VideoDecodeError(path, f"truncated: header declares {declared} frames, file holds {packets}")
    if last_cut_short:  # e.g. a fragmented MP4, which declares no count: its frames would fail only when asked for
        raise VideoDecodeError(path, f"truncated: the file ends inside its last video packet (of {packets})")
    if not shown:
        raise VideoDecodeError(path, "no video frames", kind="no_video")
    pts = np.sort(np.asarray(shown, dtype=np.int64))
    steps = np.diff(pts)
    step = int(steps[0]) if len(steps) else max(int(durations[0]), 1)
    constant = bool(len(steps) == 0 or (steps == step).all()) and step > 0
    if "matroska" in container.format.name and declared_seconds and time_base is not None:
        frame_seconds = float(step * time_base)
        # Where the last frame ends: its pts plus its own duration (a held last frame lasts longer). Matroska declares
        # that end time, counted from 0, not from the first frame (which a cut or an offset moves later).
        last_duration = int(durations[int(np.argmax(shown))]) or step
        shown_seconds = float((pts[-1] + last_duration) * time_base)
        declared_length = declared_seconds - max(float(pts[0] * time_base), 0.0)  # the tolerance: of the video's length
        if declared_seconds - shown_seconds > max(TRUNCATION_TOLERANCE * declared_length, 2 * frame_seconds):
            raise VideoDecodeError(
                path, f"truncated: frames end at {shown_seconds:.2f} s, the container declares {declared_seconds:.2f} s")
    # Reorder depth: for each packet, the pictures among the previous 16 (H.264's largest picture buffer) in
    # decoding order that are shown after it.
    window = np.lib.stride_tricks.sliding_window_view(
        np.concatenate([np.full(16, np.iinfo(np.int64).min), np.asarray(decode_order, dtype=np.int64)]), 17)
    reorder_depth = int((window[:, :16] > window[:, 16:]).sum(axis=1).max())
    key_frames = np.searchsorted(pts, np.asarray(key_pts, dtype=np.int64))  # display positions of the keyframes
    bounds = np.concatenate([[0], np.clip(key_frames, 0, len(pts)), [len(pts)]])
    return VideoIndex(
        num_frames=len(pts),
        stream_index=stream_index,
        height=height,
        width=width,
        first_pts=int(pts[0]),
        pts_step=step if constant else 0,
        key_interval=int(np.diff(bounds).max()),
        seek_margin=max(key_margin, default=0),
        rotation=rotation or 0,
        exact_header=(constant and discarded == 0 and int(pts[0]) == 0 and len(pts) == max(declared, len(pts))
                      and not decode_order_pts),
        closed_gops=closed_gops,
        reorder_depth=reorder_depth,
        decode_order_pts=decode_order_pts,
        pts=None if constant else pts,
    )
