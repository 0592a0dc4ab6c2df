"""timm ``Beit`` (BEiT, BEiT v2: relative position bias)."""

from __future__ import annotations

import copy

import torch
from timm.models.beit import Attention as BeitAttention
from timm.models.beit import Beit
from torch import nn

from adaptkit.backbones.base import SpatialContext, register_backbone
from adaptkit.backbones.timm_common import GammaLayerScale, TimmFamily, fused_qkv_is_called, timm_projections
from adaptkit.layers.attention import AttentionProjections


@register_backbone
class TimmBeit(GammaLayerScale, TimmFamily):
    """Spatial attention adds the relative position bias; temporal attention must not."""

    name = "timm_beit"
    description = "timm Beit (relative position bias)"

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return isinstance(image_model, Beit)

    def validate(self) -> None:
        super().validate()
        self.require_attention(BeitAttention)

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        m = self.model
        x = m.patch_embed(frames)
        x = torch.cat((m.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if m.pos_embed is not None:
            x = x + m.pos_embed
        x = m.pos_drop(x)
        shared_bias = m.rel_pos_bias() if m.rel_pos_bias is not None else None
        return x, {"shared_rel_pos_bias": shared_bias}

    def lora_targets(self) -> list[str]:
        return ["qkv"] if fused_qkv_is_called(self.model.blocks[0].attn) else ["attn.proj"]

    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return block(x, shared_rel_pos_bias=spatial["shared_rel_pos_bias"])

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return attn(x, shared_rel_pos_bias=spatial["shared_rel_pos_bias"])

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        # The relative position bias encodes 2-D patch offsets: along time (spatial=None) it is left out.
        if spatial is None:
            return timm_projections(attn)
        bias = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else None  # (1, heads, L, L)
        shared = spatial["shared_rel_pos_bias"]
        if shared is not None:
            bias = shared if bias is None else bias + shared
        return timm_projections(attn, bias=bias)

    def new_temporal_attention(self, block: nn.Module) -> nn.Module:
        attn = copy.deepcopy(block.attn)
        # The copy attends over time only: the spatial bias table would never be used.
        attn.relative_position_bias_table = None
        attn.relative_position_index = None
        return attn

