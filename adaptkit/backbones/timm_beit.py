"""timm ``Beit`` (BEiT, BEiT v2: relative position bias)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.models.beit import Beit
from torch import nn

from adaptkit.backbones.base import SpatialContext, register_backbone
from adaptkit.backbones.timm_common import GammaLayerScale, TimmFamily, fused_qkv_is_called


@register_backbone
class TimmBeit(GammaLayerScale, TimmFamily):
    """Spatial attention adds the relative position bias; temporal attention must not."""

    name = "timm_beit"
    description = "timm Beit (relative position bias)"

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return isinstance(image_model, Beit)

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

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext | None) -> torch.Tensor:
        if spatial is not None:
            return attn(x, shared_rel_pos_bias=spatial["shared_rel_pos_bias"])
        return _attend_without_position_bias(attn, x)

    def new_temporal_attention(self, block: nn.Module) -> nn.Module:
        attn = copy.deepcopy(block.attn)
        # The copy attends over time only: the spatial bias table would never be used.
        attn.relative_position_bias_table = None
        attn.relative_position_index = None
        return attn


def _attend_without_position_bias(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Beit's attention (same frozen weights) with the relative position bias left out."""
    if attn.q_bias is None:
        qkv = attn.qkv(x)
    else:
        qkv = F.linear(x, attn.qkv.weight, torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))
    # (S, L, 3*H*d) -> 3 x (S, H, L, d)
    q, k, v = rearrange(qkv, "s l (three h d) -> three s h l d", three=3, h=attn.num_heads)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    out = rearrange(out, "s h l d -> s l (h d)")
    return attn.proj_drop(attn.proj(out))
