"""timm ``Eva`` (EVA-02, and the other RoPE ViTs built on it)."""

from __future__ import annotations

import torch
from timm.layers import apply_rot_embed_cat
from timm.models.eva import AttentionRope, Eva, EvaAttention, EvaBlock
from torch import nn

from adaptkit.backbones.base import SpatialContext, register_backbone
from adaptkit.backbones.timm_common import GammaLayerScale, TimmFamily, fused_qkv_is_called, timm_projections, timm_qkv
from adaptkit.layers.attention import AttentionProjections


@register_backbone
class TimmEva(GammaLayerScale, TimmFamily):
    """Spatial attention gets the 2-D rotary embedding; temporal attention must not."""

    name = "timm_eva"
    description = "timm Eva (rotary position embedding; pre-norm EvaBlock)"

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return isinstance(image_model, Eva)

    def validate(self) -> None:
        super().validate()
        unsupported = {type(b).__name__ for b in self.model.blocks if not isinstance(b, EvaBlock)}
        if unsupported:
            raise TypeError(f"timm Eva with block type(s) {sorted(unsupported)} is not supported (pre-norm EvaBlock only)")
        self.require_attention(EvaAttention, AttentionRope)
        if getattr(self.model, "rope_mixed", False):
            raise TypeError("timm Eva with depth-dependent ('mixed') RoPE is not supported")
        if self.model.patch_drop is not None:
            raise ValueError(
                "patch dropout drops different tokens in every frame, which breaks temporal attention; "
                "build the model with patch_drop_rate=0"
            )

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        x = self.model.patch_embed(frames)
        x, rope = self.model._pos_embed(x)
        return x, {"rope": rope}

    def lora_targets(self) -> list[str]:
        attn = self.model.blocks[0].attn
        if fused_qkv_is_called(attn):
            return ["qkv"]
        return ["q_proj", "v_proj"] if getattr(attn, "q_proj", None) is not None else ["attn.proj"]

    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return block(x, rope=spatial["rope"])

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return attn(x, rope=spatial["rope"])

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        # The rotary table encodes 2-D patch positions; along time (spatial=None) it would be meaningless.
        rope = None if spatial is None else spatial["rope"]
        if rope is None:
            return timm_projections(attn)
        return timm_projections(attn, qkv=lambda x: _rotate_qk(attn, timm_qkv(attn, x), rope))


def _rotate_qk(attn: nn.Module, qkv: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Apply Eva's rotary embedding to the patch tokens' q and k: packed (S, L, 3, heads, d) in and out."""
    npt = attn.num_prefix_tokens
    half = getattr(attn, "rotate_half", False)
    q, k, v = qkv.unbind(-3)  # (S, L, heads, d) each
    emb = rope.unsqueeze(-2)  # (L - prefix, 2d) -> (L - prefix, 1, 2d): the same rotation for every head

    def rotate(t: torch.Tensor) -> torch.Tensor:
        return torch.cat((t[:, :npt], apply_rot_embed_cat(t[:, npt:], emb, half=half)), dim=1).type_as(v)

    return torch.stack((rotate(q), rotate(k), v), dim=-3)
