"""What timm's ViT-like families (VisionTransformer, Eva, Beit) have in common."""

from __future__ import annotations

import torch
from torch import nn

from adaptkit.backbones.base import BackboneFamily


class TimmFamily(BackboneFamily):
    """Shared model- and block-level plumbing for timm's pre-norm ViT variants.

    Blocks have ``norm1 / attn / drop_path1 / norm2 / mlp / drop_path2``; pooling is the model's
    own ``forward_head(norm(x), pre_logits=True)``, which covers token / avg / map pooling.
    """

    @property
    def embed_dim(self) -> int:
        return self.model.embed_dim

    def blocks(self) -> nn.ModuleList | nn.Sequential:
        return self.model.blocks

    def check_frame_size(self, height: int, width: int) -> None:
        patch_embed = self.model.patch_embed
        ph, pw = patch_embed.patch_size
        if getattr(self.model, "dynamic_img_size", False):
            if getattr(patch_embed, "dynamic_img_pad", False) or (height % ph == 0 and width % pw == 0):
                return
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of the patch size {ph}x{pw}; "
                f"this model accepts any size divisible by the patch size"
            )
        expected = tuple(patch_embed.img_size)
        if (height, width) != expected:
            raise ValueError(
                f"frame size {height}x{width} does not match the model's input size {expected[0]}x{expected[1]}; "
                f"resize frames to {expected[0]}x{expected[1]} or build the model with dynamic_img_size=True"
            )

    def pre_blocks(self, x: torch.Tensor) -> torch.Tensor:
        norm_pre = getattr(self.model, "norm_pre", None)
        return x if norm_pre is None else norm_pre(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x), pre_logits=True)

    def head_paths(self) -> list[str]:
        # Distilled DeiT has a second head whose token is still pooled by forward_head(pre_logits=True).
        return [name for name in ("head", "head_dist") if hasattr(self.model, name)]

    def final_norm_paths(self) -> list[str]:
        return [name for name in ("norm", "fc_norm") if any(True for _ in getattr(self.model, name).parameters())]

    # ---------------------------------------------------------------- block level
    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.norm1(x)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attn

    def drop_path1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.drop_path1(y)

    def norm2(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.norm2(x)

    def drop_path2(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.drop_path2(y)


class GammaLayerScale:
    """Eva and Beit keep layer scale as bare ``gamma_1 / gamma_2`` parameters (or None)."""

    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return y if block.gamma_1 is None else block.gamma_1 * y

    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        y = block.mlp(xn)
        return y if block.gamma_2 is None else block.gamma_2 * y


def fused_qkv_is_called(attn: nn.Module) -> bool:
    """Whether ``attn.qkv`` runs as a module (so PEFT can wrap it).

    timm's Eva/Beit attention with q/v biases calls ``F.linear(x, qkv.weight, bias)`` directly,
    bypassing the module: LoRA placed on ``qkv`` there would silently do nothing.
    """
    if getattr(attn, "qkv", None) is None:
        return False
    return getattr(attn, "q_bias", None) is None or getattr(attn, "qkv_bias_separate", False)
