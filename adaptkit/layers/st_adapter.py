"""The spatio-temporal adapter of ST-Adapter (Pan et al., NeurIPS 2022): a bottleneck whose middle is a 3-D conv."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from adaptkit.layers.frames import check_frame_folded, check_positive


class STAdapter(nn.Module):
    """Linear(D, C) -> depthwise Conv3d over (T, h, w) -> Linear(C, D), returning the update (the caller adds it).

    Pan et al., "ST-Adapter: Parameter-Efficient Image-to-Video Transfer Learning", NeurIPS 2022
    (arXiv 2206.13559; the authors' code: github.com/linziyi96/st-adapter).

    The convolution is depthwise (one kernel per bottleneck channel) with "same" zero padding, so
    a clip keeps its length and grid. Its weight and every bias start at zero (as in the authors'
    code), so a fresh adapter's update is exactly zero and the adapted model starts as the image model.

    Args:
        dim: Token width D.
        hidden: Bottleneck width C (the paper's ViT-B/16 setting: 384).
        kernel: Convolution size over (time, height, width); odd sizes (paper: (3, 1, 1)), so that
            "same" padding keeps every frame and position.

    Raises:
        ValueError: if ``kernel`` is not three odd positive sizes (an even size would change the
            clip length, and with it the batch the frame-folded output regroups into).
    """

    def __init__(self, dim: int, hidden: int, kernel: tuple[int, int, int] = (3, 1, 1)) -> None:
        super().__init__()
        if (not isinstance(kernel, (tuple, list)) or len(kernel) != 3
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel)):
            raise ValueError(f"STAdapter kernel must be 3 odd positive sizes (time, height, width), got {kernel!r}")
        check_positive("STAdapter hidden", hidden)
        kernel = tuple(kernel)
        self.down = nn.Linear(dim, hidden)
        self.conv = nn.Conv3d(hidden, hidden, kernel, padding=tuple(k // 2 for k in kernel), groups=hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        nn.init.zeros_(self.up.bias)

    def forward(self, grid: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Patch tokens (B*T, h, w, D) -> update (B*T, h, w, D), mixing neighbouring frames and positions.

        Raises:
            ValueError: if B*T is not a multiple of ``num_frames``.
        """
        check_frame_folded(grid.shape[0], num_frames)
        z = self.down(grid.contiguous())  # (B*T, h, w, C); on a strided view matmul would pick its path by requires_grad
        z = rearrange(z, "(b t) h w c -> b c t h w", t=num_frames)  # Conv3d layout
        z = self.conv(z)
        z = rearrange(z, "b c t h w -> (b t) h w c")
        return self.up(z)
