"""Helpers shared by the data tests: videos whose frame i carries its index as a gray level."""

from __future__ import annotations

from pathlib import Path

import av
import torch

from adaptkit.data import encode_video

LEVEL_STEP = 6  # gray level of frame i is LEVEL_STEP * i; twice the near-lossless codecs' +-2 error, plus margin


def gray_frames(num_frames: int, height: int = 32, width: int = 48, step: int = LEVEL_STEP) -> torch.Tensor:
    """uint8 (T, 3, H, W) where frame i is uniformly step * i."""
    assert step * (num_frames - 1) <= 255
    levels = torch.arange(num_frames, dtype=torch.uint8) * step
    return levels.view(-1, 1, 1, 1).expand(num_frames, 3, height, width).contiguous()


def write_gray_video(
    path: Path,
    num_frames: int = 40,
    codec: str = "libx264",
    first_pts: int = 0,
    step: int = LEVEL_STEP,
    gop: int | None = None,
    height: int = 32,
    width: int = 48,
    rotation: int = 0,
) -> Path:
    # Near-lossless settings with forced B-frames, so decode order != display order (lossless x264 has none).
    # ``gop`` puts a keyframe every ``gop`` frames, so that seeking has somewhere to land.
    keyint = f":keyint={gop}:min-keyint={gop}" if gop else ""
    options = {
        "libx264": {"qp": "2", "x264-params": f"bframes=2:b-adapt=0:scenecut=0{keyint}"},
        "mpeg4": {"qscale": "1", "bf": "2", **({"g": str(gop)} if gop else {})},
        "libvpx-vp9": {"lossless": "1", **({"g": str(gop)} if gop else {})},
    }.get(codec, {})
    frames = gray_frames(num_frames, height, width, step=step)
    encode_video(path, frames, codec=codec, options=options, first_pts=first_pts, display_rotation=rotation)
    return path


def frame_indices(frames: torch.Tensor, step: int = LEVEL_STEP) -> list[int]:
    """Recover each decoded frame's original index from its mean gray level."""
    return [round(level / step) for level in frames.float().mean(dim=(1, 2, 3)).tolist()]


def assert_frames_are(frames: torch.Tensor, expected: list[int], step: int = LEVEL_STEP) -> None:
    """Every pixel of decoded frame k is closer to gray level step * expected[k] than to any neighbour's level."""
    assert frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[0] == len(expected)
    target = torch.tensor(expected, dtype=torch.float32).view(-1, 1, 1, 1) * step
    error = (frames.float() - target).abs().amax(dim=(1, 2, 3))
    found = frame_indices(frames, step)
    assert (error < step / 2).all(), f"frames {found} != {expected} (max pixel error {error.tolist()})"


def has_reordered_frames(path: Path) -> bool:
    """Whether packets come in an order other than display order (B-frames)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [packet.pts for packet in container.demux(stream) if packet.size]
    return pts != sorted(pts)
