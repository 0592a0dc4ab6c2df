"""timm ``VisionTransformer`` (ViT, DeiT, CLIP/SigLIP/DINOv2 towers, register tokens, layer scale)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from adaptkit.backbones.base import BlockLinears, LinearSite, SpatialContext, register_backbone
from adaptkit.backbones.timm_common import TimmFamily


@register_backbone
class TimmViT(TimmFamily):
    name = "timm_vit"
    description = "timm VisionTransformer (class/prefix/register tokens, layer scale, token/avg/map pooling)"

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return isinstance(image_model, VisionTransformer)

    def validate(self) -> None:
        super().validate()
        unsupported = {type(b).__name__ for b in self.model.blocks if not isinstance(b, Block)}
        if unsupported:
            raise TypeError(
                f"timm VisionTransformer with block type(s) {sorted(unsupported)} is not supported: "
                f"adaptkit adapts the pre-norm timm Block (norm1/attn/ls1, norm2/mlp/ls2)"
            )
        self.require_attention(Attention)
        if not isinstance(self.model.patch_drop, nn.Identity):
            raise ValueError(
                "patch dropout drops different tokens in every frame, which breaks temporal attention; "
                "build the model with patch_drop_rate=0"
            )

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        x = self.model.patch_embed(frames)
        return self.model._pos_embed(x), {}

    def linear_layers(self, block: nn.Module) -> BlockLinears | None:
        mlp = block.mlp
        if not (hasattr(mlp, "fc1") and hasattr(mlp, "fc2")) or not isinstance(block.attn.qkv, nn.Linear):
            return None
        return BlockLinears(
            LinearSite(block.attn.qkv, "weight", "bias"), LinearSite(block.attn.proj, "weight", "bias"),
            LinearSite(mlp.fc1, "weight", "bias"), LinearSite(mlp.fc2, "weight", "bias"),
        )

    def lora_targets(self) -> list[str]:
        return ["qkv"]

    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return block(x)

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return attn(x)

    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.ls1(y)

    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        return block.ls2(block.mlp(xn))
