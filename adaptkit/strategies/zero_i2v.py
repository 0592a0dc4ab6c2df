"""ZeroI2V: linear adapters folded into the frozen weights, and dual-headed attention (Li et al., ECCV 2024).

After :meth:`VideoModel.merge <adaptkit.VideoModel.merge>` the model has exactly the image model's
parameters and inference cost; it keeps modelling time through the head assignment alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from adaptkit.backbones.base import BackboneFamily, BlockLinears, LinearSite, SpatialContext
from adaptkit.errors import StrategyOptionError
from adaptkit.layers import LinearAdapter, fold_after, fold_before, shift_heads
from adaptkit.layers.attention import attend_sequences
from adaptkit.strategies.base import (
    StrategyConfig,
    StrategyContext,
    VideoBlock,
    check_range,
    parse_layers,
    register_strategy,
    validate_layers_spec,
)

ADAPTERS = ("attn_in", "attn_out", "mlp_in", "mlp_out")


@register_strategy
@dataclasses.dataclass
class ZeroI2VConfig(StrategyConfig):
    """Options of the ``"zero-i2v"`` strategy (defaults: the reference's K400 ViT-B/16 setting).

    Li, Zhu and Wang, "ZeroI2V: Zero-Cost Adaptation of Pre-trained Transformers from Image to Video",
    ECCV 2024 (arXiv 2310.01324; code: github.com/MCG-NJU/ZeroI2V): the paper's linear adapters and
    its spatial-temporal dual-headed attention (STDHA).

    Per block, four linear adapters (no activation; :class:`~adaptkit.layers.LinearAdapter`) sit
    right before the attention's q/k/v projection, after its output projection, before the MLP's
    first layer and after its last, so that :meth:`merge` folds each exactly into that frozen
    layer. The attention becomes spatial-temporal dual-headed: heads ``i < len(temporal_offsets)``
    take their keys and values from frame ``t + temporal_offsets[i]`` of the clip (the others from
    frame t), which adds no parameter and no multiply-accumulate. Adapters and head train; there is
    no temporal embedding and no trainable norm, so the merged model is the plain image model plus
    the new head.

    Needs a family that describes its blocks' linear layers (``family.linear_layers``: timm ViT,
    open_clip), with biases on them and no layer scale between them and the residual.

    Raises:
        StrategyOptionError: (a ValueError) from :func:`adaptkit.inject`, for ``ratio`` outside (0, 1], ``scale``
            outside [0, 100], ``temporal_offsets`` that are not integers, more offsets than attention heads, or an
            offset that reaches past the clip (|offset| >= T, T > 1); a malformed ``layers``.
        TypeError: from :func:`adaptkit.inject`, on a family without linear-layer descriptions, without biases
            on those layers, or with a layer scale.
    """

    name = "zero-i2v"
    mergeable = True

    ratio: float = 0.25
    """Adapter bottleneck width as a fraction of the token width."""
    scale: float = 0.5
    """Weight of each adapter's bottleneck branch."""
    temporal_offsets: tuple[int, ...] | list[int] = (-1, 1)
    """Frame offset of each temporal head, from head 0 on (the reference's shift_div=12 on ViT-B/16:
    head 0 looks one frame back, head 1 one frame ahead; none: the spatial-only ablation). Each must be shorter
    than the clip the model is built for (a StrategyOptionError at inject otherwise), except in a one-frame model."""
    layers: str | list[int] = "all"
    """Blocks to adapt: 'all', 'top:N', 'bottom:N', 'every:N' or a list of indices."""

    def validate(self) -> None:
        check_range(self, "ratio", 0.0, 1.0, low_inclusive=False)  # an adapter needs at least one hidden unit
        check_range(self, "scale", 0.0, 100.0)
        offsets = self.temporal_offsets
        if not isinstance(offsets, (tuple, list)) or any(isinstance(o, bool) or not isinstance(o, int) for o in offsets):
            raise ValueError(f"zero-i2v option temporal_offsets must be a list of frame offsets, got {offsets!r}")
        self.temporal_offsets = tuple(offsets)
        validate_layers_spec(self.layers)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "temporal_offsets": list(self.temporal_offsets)}

    def check_backbone(self, family: BackboneFamily) -> None:
        block = family.blocks()[0]
        linears = family.linear_layers(block)
        if linears is None:
            raise TypeError(
                f"strategy 'zero-i2v' folds its adapters into a block's frozen linear layers, which {family.name} does "
                f"not describe (family.linear_layers); use it on timm_vit or open_clip_vit"
            )
        if any(site.bias is None or getattr(site.module, site.bias) is None for site in linears):
            raise TypeError(
                f"strategy 'zero-i2v' needs biases on {family.name}'s q/k/v, output and MLP projections to fold its "
                f"adapters' offsets into; this model was built without some of them"
            )
        reference = next(block.parameters())
        probe = torch.randn(1, 1, family.block_dim(block), generator=torch.Generator().manual_seed(0)).to(reference)
        scaled = family.scale1(block, probe)
        # No layer scale hands the input back as it is. A meta model's scale has no values to compare, so having one
        # is refused there too: the cost tools must not list a strategy that inject refuses on the real model.
        if scaled is not probe and (reference.device.type == "meta" or not torch.equal(scaled, probe)):
            raise TypeError(
                f"strategy 'zero-i2v' cannot fold an adapter through a layer scale, and this {family.name} model has "
                f"one; build it without init_values / ls_init_value"
            )
        heads = getattr(family.attention(block), "num_heads", 0)
        if len(self.temporal_offsets) > heads:  # the option's value, checked against this model
            raise StrategyOptionError(
                f"zero-i2v option temporal_offsets has {len(self.temporal_offsets)} offsets but {family.name}'s "
                f"attention has {heads} heads"
            )

    def apply(self, context: StrategyContext) -> None:
        # An offset as long as the clip never shifts anything: a typo there silently removes a temporal head. A
        # one-frame model has no neighbour for any offset and is the image model by design (heads fall back).
        if context.num_frames > 1 and any(abs(offset) >= context.num_frames for offset in self.temporal_offsets):
            raise StrategyOptionError(
                f"zero-i2v option temporal_offsets={list(self.temporal_offsets)} reaches past a clip of "
                f"{context.num_frames} frames: every offset must be within ±{context.num_frames - 1}"
            )
        blocks = context.family.blocks()
        for i in parse_layers(self.layers, len(blocks)):
            blocks[i] = DualHeadBlock(blocks[i], context.family, self)

    def merge(self, context: StrategyContext, state: Any) -> tuple[Any, Callable[[], None]]:
        undo = [block.merge() for block in context.family.blocks() if isinstance(block, DualHeadBlock)]

        def undo_all() -> None:
            for step in reversed(undo):
                step()

        return state, undo_all


class DualHeadBlock(VideoBlock):
    """One frozen block with ZeroI2V's linear adapters and dual-headed attention (STDHA). With ``x`` (B*T, N, D)::

        xn = attn_in(norm1(x))                       # folds into the q/k/v projection
        q, k, v = qkv(xn); k, v = shift_heads(k, v)  # temporal heads: keys/values of neighbouring frames
        x  = x + attn_out(proj(attend(q, k, v)))     # folds into the output projection
        x  = x + mlp_out(mlp(mlp_in(norm2(x))))      # fold into the MLP's first and last layers

    After :meth:`merge` the adapters are gone and only the head assignment remains.
    """

    def __init__(self, block: nn.Module, family: BackboneFamily, config: ZeroI2VConfig) -> None:
        super().__init__(block, family)
        dim = family.block_dim(block)
        self.offsets = tuple(config.temporal_offsets)
        for name in ADAPTERS:
            setattr(self, name, LinearAdapter(dim, config.ratio, config.scale))

    def _attention(self, xn: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        if not self.offsets:  # no temporal head: the block's own attention
            return self.family.attend_space(self.block, xn, spatial)
        projections = self.family.attention_projections(self.family.attention(self.block), spatial)
        q, k, v = projections.qkv(xn).unbind(-3)  # 3 x (B*T, N, heads, d)
        k, v = shift_heads(k, num_frames, self.offsets), shift_heads(v, num_frames, self.offsets)
        out = attend_sequences(q, k, v, scale=projections.scale, bias=projections.bias, dropout_p=projections.dropout)
        return projections.out(out, xn)

    def forward(self, x: torch.Tensor, spatial: SpatialContext, num_frames: int) -> torch.Tensor:
        f, blk = self.family, self.block
        xn = _maybe(self.attn_in, f.norm1(blk, x))
        y = _maybe(self.attn_out, self._attention(xn, spatial, num_frames))
        x = x + f.drop_path1(blk, f.scale1(blk, y))
        y = _maybe(self.mlp_out, f.mlp(blk, _maybe(self.mlp_in, f.norm2(blk, x))))
        return x + f.drop_path2(blk, y)

    @torch.no_grad()
    def merge(self) -> Callable[[], None]:
        """Fold the four adapters into the frozen layers (new frozen Parameters) and drop them; returns the undo."""
        linears: BlockLinears = self.family.linear_layers(self.block)
        replaced: list[tuple[nn.Module, str, nn.Parameter]] = []

        def replace(site: LinearSite, weight: torch.Tensor, bias: torch.Tensor) -> None:
            for attr, value in ((site.weight, weight), (site.bias, bias)):
                old = getattr(site.module, attr)
                replaced.append((site.module, attr, old))
                setattr(site.module, attr, nn.Parameter(value, requires_grad=False))

        adapters = {name: getattr(self, name) for name in ADAPTERS}
        for name, fold in (("attn_in", fold_before), ("attn_out", fold_after), ("mlp_in", fold_before),
                           ("mlp_out", fold_after)):
            site = getattr(linears, name)
            replace(site, *fold(getattr(site.module, site.weight), getattr(site.module, site.bias), adapters[name]))
            setattr(self, name, None)

        def undo() -> None:
            for module, attr, old in reversed(replaced):
                setattr(module, attr, old)
            for name, adapter in adapters.items():
                setattr(self, name, adapter)

        return undo


def _maybe(adapter: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if adapter is None else adapter(x)
