"""Keys and values of some attention heads taken from neighbouring frames (ZeroI2V's dual-headed attention)."""

from __future__ import annotations

import torch

from adaptkit.layers.frames import check_frame_folded


def shift_heads(x: torch.Tensor, num_frames: int, offsets: tuple[int, ...]) -> torch.Tensor:
    """Give head ``i < len(offsets)`` of frame ``t`` the values of frame ``t + offsets[i]`` of the same clip.

    Where ``t + offsets[i]`` falls outside the clip the head keeps its own frame's values (as the
    ZeroI2V reference's shift does). Other heads are unchanged. No parameters, no arithmetic: an
    index along time.

    Args:
        x: Frame-folded per-head tensors (B*T, N, heads, d), e.g. keys or values.
        num_frames: T.
        offsets: One frame offset per temporal head, e.g. (-1, 1): head 0 looks one frame back,
            head 1 one frame ahead.

    Returns:
        (B*T, N, heads, d).

    Raises:
        ValueError: if B*T is not a multiple of ``num_frames``.
    """
    check_frame_folded(x.shape[0], num_frames)
    shifted_heads = len(offsets)
    if shifted_heads == 0:
        return x
    clips = x.unflatten(0, (-1, num_frames))  # (B, T, N, heads, d)
    frames = torch.arange(num_frames, device=x.device)
    source = frames[:, None] + torch.tensor(offsets, dtype=torch.long, device=x.device)[None, :]  # (T, temporal heads)
    source = torch.where((source >= 0) & (source < num_frames), source, frames[:, None])
    index = source.view(1, num_frames, 1, shifted_heads, 1)  # broadcast over B, N and d
    moved = torch.take_along_dim(clips[:, :, :, :shifted_heads], index, dim=1)
    return torch.cat((moved, clips[:, :, :, shifted_heads:]), dim=3).flatten(0, 1)
