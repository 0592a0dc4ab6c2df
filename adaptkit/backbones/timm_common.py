"""What timm's ViT-like families (VisionTransformer, Eva, Beit) have in common."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adaptkit.backbones.base import BackboneFamily, SpatialContext
from adaptkit.errors import VideoInputError
from adaptkit.layers.attention import AttentionProjections


class TimmFamily(BackboneFamily):
    """Shared model- and block-level plumbing for timm's pre-norm ViT variants.

    Blocks have ``norm1 / attn / drop_path1 / norm2 / mlp / drop_path2``; pooling is the model's
    own ``forward_head(norm(x), pre_logits=True)``, which covers token / avg / map pooling.
    """

    def validate(self) -> None:
        """Refuse a model built without pooling (``global_pool=''``, timm's feature-extraction setting): a video
        model pools every frame to one vector. Families call this before their own checks."""
        if not self.model.global_pool:
            raise ValueError(
                f"timm {type(self.model).__name__} with global_pool={self.model.global_pool!r} is not supported: a "
                "video model pools every frame to one vector; build it with a pooling, e.g. global_pool='token' or "
                "'avg'"
            )

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
            raise VideoInputError(
                f"frame size {height}x{width} is not a multiple of the patch size {ph}x{pw}; "
                f"this model accepts any size divisible by the patch size"
            )
        expected = tuple(patch_embed.img_size)
        if (height, width) != expected:
            raise VideoInputError(
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

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        return timm_projections(attn)

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


def timm_qkv(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Packed q/k/v (*, 3, heads, head_dim) of a timm attention module, token by token.

    Covers timm's ``Attention`` (ViT), ``EvaAttention`` / ``AttentionRope``, Beit's and Swin's: a fused
    ``qkv`` with or without separate q/v biases (the k bias is a zero buffer), or separate
    ``q_proj / k_proj / v_proj`` (with fewer k/v heads under grouped-query attention, repeated here),
    then the optional per-head ``q_norm`` / ``k_norm``.
    """
    heads = attn.num_heads
    if getattr(attn, "qkv", None) is None:  # Eva with separate projections
        q = attn.q_proj(x).unflatten(-1, (heads, -1))
        k, v = (proj(x).unflatten(-1, (-1, q.shape[-1])) for proj in (attn.k_proj, attn.v_proj))
        if k.shape[-2] != heads:  # grouped-query attention: query head h reads k/v head h // groups, as timm does
            k, v = (t.repeat_interleave(heads // t.shape[-2], dim=-2) for t in (k, v))
        qkv = torch.stack((q, k, v), dim=-3)
    else:
        if getattr(attn, "q_bias", None) is None:
            fused = attn.qkv(x)
        else:
            bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            fused = attn.qkv(x) + bias if attn.qkv_bias_separate else F.linear(x, attn.qkv.weight, bias)
        qkv = fused.unflatten(-1, (3, heads, -1))  # (*, 3 * heads * head_dim) -> (*, 3, heads, head_dim), a view
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if isinstance(q_norm, nn.Identity | None) and isinstance(k_norm, nn.Identity | None):
        return qkv  # a view of the projection's output: nothing copied
    q, k, v = qkv.unbind(-3)
    return torch.stack((q_norm(q), k_norm(k), v), dim=-3)


def timm_out(attn: nn.Module, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What a timm attention module does after the attention: scale norm, gate, projection, dropout."""
    norm = getattr(attn, "norm", None)
    if norm is not None:
        out = norm(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out))


def timm_projections(
    attn: nn.Module,
    qkv: Callable[[torch.Tensor], torch.Tensor] | None = None,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> AttentionProjections:
    """A timm attention module as :class:`AttentionProjections`.

    ``qkv`` overrides :func:`timm_qkv` (to add rotary embeddings or cosine normalisation), ``scale``
    the module's own softmax scale.
    """
    return AttentionProjections(
        qkv=qkv if qkv is not None else (lambda x: timm_qkv(attn, x)),
        out=lambda out, x: timm_out(attn, out, x),
        scale=attn.scale if scale is None else scale,
        dropout=attn.attn_drop.p if attn.training else 0.0,
        bias=bias,
        out_reads_tokens=getattr(attn, "gate", None) is not None,
    )
