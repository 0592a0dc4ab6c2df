"""The spatio-temporal adapter of ST-Adapter (Pan et al., NeurIPS 2022): a bottleneck whose middle is a 3-D conv."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class STAdapter(nn.Module):
    """Linear(D, C) -> depthwise Conv3d over (T, h, w) -> Linear(C, D), returning the update (the caller adds it).

    The convolution is depthwise (one kernel per bottleneck channel) with "same" zero padding, so
    a clip keeps its length and grid. Its weight and every bias start at zero (as in the authors'
    code), so a fresh adapter's update is exactly zero and the adapted model starts as the image model.

    Args:
        dim: Token width D.
        hidden: Bottleneck width C (the paper's ViT-B/16 setting: 384).
        kernel: Convolution size over (time, height, width); odd sizes (paper: (3, 1, 1)).
    """

    def __init__(self, dim: int, hidden: int, kernel: tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.conv = nn.Conv3d(hidden, hidden, kernel, padding=tuple(k // 2 for k in kernel), groups=hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, grid: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Patch tokens (B*T, h, w, D) -> update (B*T, h, w, D), mixing neighbouring frames and positions."""
        z = self.down(grid.contiguous())  # (B*T, h, w, C); on a strided view matmul would pick its path by requires_grad
        z = rearrange(z, "(b t) h w c -> b c t h w", t=num_frames)  # Conv3d layout
        z = self.conv(z)
        z = rearrange(z, "b c t h w -> (b t) h w c")
        return self.up(z)
