"""TimeSformer-style divided space-time attention, fully finetuned (AIM Table 1, row 3)."""

from __future__ import annotations

import copy
import dataclasses

import torch
from timm.layers import DropPath
from torch import nn

from adaptkit.backbones.base import BackboneFamily, SpatialContext
from adaptkit.strategies.base import (
    StrategyConfig,
    StrategyContext,
    VideoBlock,
    check_range,
    drop_path_rates,
    register_strategy,
)


@register_strategy
@dataclasses.dataclass
class TimeSformerConfig(StrategyConfig):
    """A NEW temporal attention per block (initialised from the block's own), then the block.

    Divided space-time attention of TimeSformer (Bertasius et al., "Is Space-Time Attention All You
    Need for Video Understanding?", ICML 2021), the full-finetuned space-time baseline AIM compares
    with (AIM Sec. 4.1, Table 1 row 3).

    Everything trains. The temporal branch's output projection starts at zero, so a fresh model
    equals the image model frame by frame.

    Raises:
        ValueError: from :func:`adaptkit.inject`, for ``drop_path`` outside [0, 1).
        TypeError: from :func:`adaptkit.inject`, on a hierarchical family (Swin): the strategy is ViT-only.
    """

    name = "timesformer"
    temporal_embedding = True

    drop_path: float = 0.0
    """Max stochastic-depth rate, linear over depth, on the temporal branch."""

    def validate(self) -> None:
        check_range(self, "drop_path", 0.0, 1.0, high_inclusive=False)

    def check_backbone(self, family: BackboneFamily) -> None:
        if family.hierarchical:
            raise TypeError(
                f"strategy 'timesformer' is ViT-only: divided space-time attention is defined on one stack of "
                f"same-width pre-norm blocks, and {family.name} has stages of different widths. "
                f"Use a strategy that adapts blocks one by one, such as 'aim', on this backbone"
            )

    def apply(self, context: StrategyContext) -> None:
        family = context.family
        blocks = family.blocks()
        rates = drop_path_rates(self.drop_path, len(blocks))
        for i, block in enumerate(blocks):
            blocks[i] = DividedSpaceTimeBlock(block, family, rates[i])
        context.backbone.requires_grad_(True)


class DividedSpaceTimeBlock(VideoBlock):
    """``x = x + drop_path(temporal_fc(temporal_attn(temporal_norm(x))))``, then the block.

    ``temporal_attn`` attends over the clip's frames, token position by token position (class
    token included), on frame-folded tokens (B*T, N, D).
    """

    def __init__(self, block: nn.Module, family: BackboneFamily, drop_path: float) -> None:
        super().__init__(block, family)
        dim = family.embed_dim
        self.temporal_norm = copy.deepcopy(family.norm1_module(block))
        self.temporal_attn = family.new_temporal_attention(block)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        x = x + self.drop_path(self.run_temporal(self._temporal, x, num_frames))
        return self.family.block_forward(self.block, x, spatial)

    def _temporal(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        xt = self.temporal_norm(x)  # (B*T, N, D): per token
        return self.temporal_fc(self.family.attend_frames(self.temporal_attn, xt, num_frames))

