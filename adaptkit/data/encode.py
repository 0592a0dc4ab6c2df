"""Write uint8 (T, C, H, W) clips to real video files with PyAV (for tests, demos and synthetic datasets)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
import torch

__all__ = ["encode_video", "encoder_available"]


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build can encode with ``codec`` (e.g. ``"libx264"``, ``"mpeg4"``, ``"libvpx-vp9"``)."""
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def encode_video(
    path: str | os.PathLike[str],
    frames: torch.Tensor | np.ndarray,
    fps: int = 25,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
    first_pts: int = 0,
    display_rotation: int = 0,
    pts: Sequence[int] | None = None,
) -> None:
    """Encode RGB frames into a video file; the container follows the file extension.

    Args:
        path: output file, e.g. ``clip.mp4`` or ``clip.webm``.
        frames: uint8 (T, 3, H, W) RGB; H and W must be even for 4:2:0 chroma.
        fps: frame rate.
        codec: encoder name, e.g. ``"libx264"``, ``"mpeg4"``, ``"libvpx-vp9"``.
        options: encoder options, e.g. ``{"qp": "0"}`` for lossless x264 luma.
        pix_fmt: encoder pixel format.
        first_pts: presentation time stamp of the first frame, in frames. A negative value makes the MP4 muxer write
            an edit list that hides the first ``-first_pts`` frames, as cut-without-re-encoding files do.
        display_rotation: degrees counter-clockwise written to the display matrix (FFmpeg's convention): -90 is how
            a phone stores a portrait video as landscape frames. Players, and the decoders, show it rotated.
        pts: each frame's presentation time stamp, in frames (increasing, not necessarily consecutive: a variable
            frame rate); None is ``first_pts + i``.

    Raises:
        ValueError: frames of the wrong shape or dtype, or odd sizes.
    """
    array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"frames must be uint8 (T, 3, H, W), got {array.dtype} {array.shape}")
    height, width = array.shape[2:]
    if pix_fmt == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"yuv420p needs even height and width, got {height}x{width}")
    if pts is not None and len(pts) != len(array):
        raise ValueError(f"pts has {len(pts)} entries for {len(array)} frames")
    time_base = Fraction(1, fps)
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        if options:
            stream.options = dict(options)
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        for i, image in enumerate(array.transpose(0, 2, 3, 1)):  # (T, H, W, C) for PyAV
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = (first_pts + i if pts is None else int(pts[i])), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush delayed frames
