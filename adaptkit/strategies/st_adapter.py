"""ST-Adapter: depthwise 3-D convolution adapters on the patch grid (Pan et al., NeurIPS 2022)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from adaptkit.backbones.base import BackboneFamily, SpatialContext
from adaptkit.layers import STAdapter
from adaptkit.strategies.base import (
    StrategyConfig,
    StrategyContext,
    VideoBlock,
    check_range,
    parse_layers,
    register_strategy,
    validate_layers_spec,
)

POSITIONS = ("attn", "mlp", "attn+mlp")


@register_strategy
@dataclasses.dataclass
class STAdapterConfig(StrategyConfig):
    """Options of the ``"st-adapter"`` strategy (defaults: the paper's ViT-B/16 setting).

    Pan et al., "ST-Adapter: Parameter-Efficient Image-to-Video Transfer Learning", NeurIPS 2022
    (arXiv 2206.13559; code: github.com/linziyi96/st-adapter). Each selected block gets
    ``x <- x + up(dwconv3d(down(x)))`` on its patch tokens (prefix tokens pass through) before its
    attention (the paper's placement), and optionally before its MLP too (the authors' 24-adapter
    SSv2 setting). Only the adapters and the head train; there is no temporal
    embedding: time enters through the convolution alone. Works on every family whose patch tokens
    form a grid; on Swin, on each stage's grid.

    Raises:
        ValueError: from :func:`adaptkit.inject`, for ``ratio`` outside (0, 1], a ``kernel`` that is not
            three odd positive sizes, an unknown ``positions`` or a malformed ``layers``.
    """

    name = "st-adapter"

    ratio: float = 0.5
    """Bottleneck width as a fraction of the token width (ViT-B/16: 768 * 0.5 = the paper's 384 channels)."""
    kernel: tuple[int, int, int] | list[int] = (3, 1, 1)
    """Depthwise convolution size over (time, height, width); odd sizes."""
    positions: str = "attn"
    """Where adapters go in each block: 'attn' (before attention, the paper), 'mlp' (before the MLP) or 'attn+mlp'."""
    layers: str | list[int] = "all"
    """Blocks to adapt: 'all', 'top:N', 'bottom:N', 'every:N' or a list of indices."""

    def validate(self) -> None:
        check_range(self, "ratio", 0.0, 1.0, low_inclusive=False)  # an adapter needs at least one hidden unit
        kernel = self.kernel
        if (not isinstance(kernel, (tuple, list)) or len(kernel) != 3
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel)):
            raise ValueError(f"st-adapter option kernel must be 3 odd positive sizes (time, height, width), got {kernel!r}")
        self.kernel = tuple(kernel)
        if self.positions not in POSITIONS:
            raise ValueError(f"st-adapter option positions={self.positions!r}; choose one of {', '.join(POSITIONS)}")
        validate_layers_spec(self.layers)

    def options(self) -> dict:
        return {**super().options(), "kernel": list(self.kernel)}

    def apply(self, context: StrategyContext) -> None:
        blocks = context.family.blocks()
        for i in parse_layers(self.layers, len(blocks)):
            blocks[i] = STAdapterBlock(blocks[i], context.family, self)


class STAdapterBlock(VideoBlock):
    """One frozen block with ST-Adapters (Pan et al., NeurIPS 2022) on its residual stream::

        x = x + st_adapter_attn(x)      # patch tokens only: (B*T, h, w, D) regrouped to (B, C, T, h, w) inside
        x = x + attn(norm1(x))          # the block's own branches
        x = x + st_adapter_mlp(x)       # with positions 'mlp' / 'attn+mlp'
        x = x + mlp(norm2(x))
    """

    def __init__(self, block: nn.Module, family: BackboneFamily, config: STAdapterConfig) -> None:
        super().__init__(block, family)
        dim = family.block_dim(block)
        hidden = max(1, round(dim * config.ratio))
        kernel = tuple(config.kernel)
        self.attn_adapter = STAdapter(dim, hidden, kernel) if config.positions in ("attn", "attn+mlp") else None
        self.mlp_adapter = STAdapter(dim, hidden, kernel) if config.positions in ("mlp", "attn+mlp") else None

    def _adapt(self, adapter: STAdapter, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        _, grid = self.family.split_grid(x, spatial)
        return self.family.add_to_grid(x, adapter(grid, num_frames))

    def forward(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        if self.attn_adapter is not None:
            x = self._adapt(self.attn_adapter, x, spatial, num_frames)
        if self.mlp_adapter is None:
            return self.family.block_forward(self.block, x, spatial)
        f, blk = self.family, self.block
        x = x + f.drop_path1(blk, f.scale1(blk, f.attend_space(blk, f.norm1(blk, x), spatial)))
        x = self._adapt(self.mlp_adapter, x, spatial, num_frames)
        return x + f.drop_path2(blk, f.mlp(blk, f.norm2(blk, x)))
