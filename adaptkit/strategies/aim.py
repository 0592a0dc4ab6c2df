"""AIM: spatial, temporal and joint adaptation of a frozen image transformer (Yang et al., ICLR 2023)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from timm.layers import DropPath
from torch import nn

from adaptkit.backbones.base import BackboneFamily, SpatialContext
from adaptkit.layers import Adapter
from adaptkit.layers.video import from_time_sequences, to_time_sequences
from adaptkit.strategies.base import (
    StrategyConfig,
    VideoBlock,
    check_bool,
    check_range,
    drop_path_rates,
    parse_layers,
    register_strategy,
    validate_layers_spec,
)

if TYPE_CHECKING:
    from adaptkit.model import VideoModel


@register_strategy
@dataclasses.dataclass
class AIMConfig(StrategyConfig):
    """Options of the ``"aim"`` strategy (defaults: the paper's Kinetics setting)."""

    name = "aim"

    spatial: bool = True
    """Adapter (with skip) on the attention output: spatial adaptation."""
    temporal: bool = True
    """Re-use each block's frozen attention along time, followed by an adapter (no skip)."""
    joint: bool = True
    """Adapter (no skip) beside the MLP, scaled by ``scale``: joint adaptation."""
    temporal_in: bool = False
    """SSv2 variant: one more adapter (with skip) before the re-used temporal attention."""
    ratio: float = 0.25
    """Adapter bottleneck width as a fraction of the token width (Table 8)."""
    scale: float = 0.5
    """Weight of the joint adapter's output (the reference uses 1.0 with ``temporal_in``)."""
    layers: str | list[int] = "all"
    """Blocks to adapt: 'all', 'top:N', 'bottom:N', 'every:N' or a list of indices (Table 7)."""
    drop_path: float = 0.0
    """Max stochastic-depth rate, linear over depth, on the temporal and joint branches only."""

    def validate(self) -> None:
        check_bool(self, "spatial", "temporal", "joint", "temporal_in")
        check_range(self, "ratio", 0.0, 1.0)
        if self.ratio == 0:
            raise ValueError("aim option ratio=0 is out of range (0, 1]: an adapter needs at least one hidden unit")
        check_range(self, "scale", 0.0, 100.0)
        check_range(self, "drop_path", 0.0, 1.0, high_inclusive=False)
        if self.temporal_in and not self.temporal:
            raise ValueError("aim option temporal_in=True needs temporal=True (it feeds the temporal attention)")
        if not (self.spatial or self.temporal or self.joint):
            raise ValueError("aim needs at least one of spatial, temporal, joint; use 'linear-probe' for none")
        validate_layers_spec(self.layers)

    @property
    def temporal_embedding(self) -> bool:  # type: ignore[override]
        # Without temporal mixing, a per-frame offset would only break frame-order invariance.
        return self.temporal

    def apply(self, video_model: VideoModel) -> None:
        family = video_model.family
        blocks = family.blocks()
        rates = drop_path_rates(self.drop_path, len(blocks))
        for i in parse_layers(self.layers, len(blocks)):
            blocks[i] = AIMBlock(blocks[i], family, self, rates[i])
        for path in family.final_norm_paths():
            video_model.train_copy_of(path)


class AIMBlock(VideoBlock):
    """One frozen block with AIM's adapters: temporal -> spatial -> joint.

    With ``x`` of shape (B*T, N, D)::

        xt = T_adapter(attn(norm1(regroup(x))))         # regroup: (B*N, T, D); T_adapter has no skip
        x  = x + drop_path(regroup_back(xt))
        x  = x + S_adapter(attn(norm1(x)))              # S_adapter has a skip
        xn = norm2(x)
        x  = x + mlp(xn) + drop_path(scale * MLP_adapter(xn))

    Both attentions are the block's own frozen module and norm; the temporal one runs on the
    regrouped tensor with no spatial position machinery. Fresh adapters leave the block's
    output exactly unchanged.
    """

    def __init__(self, block: nn.Module, family: BackboneFamily, config: AIMConfig, drop_path: float) -> None:
        super().__init__(block, family)
        dim = family.embed_dim
        self.temporal_adapter_in = Adapter(dim, config.ratio, skip=True) if config.temporal_in else None
        self.temporal_adapter = Adapter(dim, config.ratio, skip=False) if config.temporal else None
        self.spatial_adapter = Adapter(dim, config.ratio, skip=True) if config.spatial else None
        self.mlp_adapter = Adapter(dim, config.ratio, skip=False) if config.joint else None
        self.scale = config.scale
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        f, blk = self.family, self.block
        attn = f.attention(blk)
        if self.temporal_adapter is not None:
            xt = f.norm1(blk, to_time_sequences(x, num_frames))  # (B*N, T, D)
            if self.temporal_adapter_in is not None:
                xt = self.temporal_adapter_in(xt)
            xt = self.temporal_adapter(f.scale1(blk, f.attend(attn, xt, None)))
            x = x + self.drop_path(from_time_sequences(xt, x, num_frames))  # back to (B*T, N, D)

        xs = f.scale1(blk, f.attend(attn, f.norm1(blk, x), spatial))
        if self.spatial_adapter is not None:
            xs = self.spatial_adapter(xs)
        x = x + f.drop_path1(blk, xs)

        xn = f.norm2(blk, x)
        x = x + f.drop_path2(blk, f.mlp(blk, xn))
        if self.mlp_adapter is not None:
            x = x + self.drop_path(self.scale * self.mlp_adapter(xn))
        return x

    def adapters(self) -> dict[str, Adapter]:
        return {name: m for name, m in self.named_children() if isinstance(m, Adapter)}
