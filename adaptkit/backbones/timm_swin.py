"""timm ``SwinTransformer`` and ``SwinTransformerV2``: stages of windowed-attention blocks.

How the AIM paper's Swin variant (Table 6) maps onto the family interface:

- ``blocks()`` is a flat, depth-ordered view over the stages' blocks (``layers`` indexes it);
  ``forward_blocks`` runs each stage's patch merging before its blocks.
- Spatial attention is the block's own windowed attention: cyclic shift, window partition,
  window bias and shift mask, all in timm's ``block._attn``. The spatial adapter sits on its
  output, which equals putting it on every window's output (the adapter is token-wise).
- Temporal attention: every spatial position attends over the clip's frames, not windowed,
  through the block's frozen ``norm1``, ``qkv`` and ``proj``, with neither the window bias nor the
  shift mask, plus a NEW trainable relative temporal bias (2T-1, heads). By default it goes into
  the regular-window blocks only (12 of Swin-B's 24, as in the paper); ``temporal_blocks="all"``
  puts it everywhere.
- No absolute temporal embedding: the relative bias is what makes the model sensitive to frame
  order (as in the authors' code, which has none either).
- Pooling is timm's own: final norm on every token, then the head's global (average) pool over
  space; the video model averages over time. Frames are embedded one by one by the 2-D patch
  embedding.

SwinV2 differs in two ways the hooks absorb:

- Res-post-norm blocks compute ``x + norm1(attn(x))`` and ``x + norm2(mlp(x))``, so ``norm1`` and
  ``norm2`` are identities here and ``scale1`` / ``mlp`` apply the post-norms: the adapters see
  what the block's own branches see.
- Temporal attention keeps V2's cosine attention with the block's frozen per-head logit scale:
  its ``qkv`` was trained for cosine similarities, and raw dot products would put the logits on
  another scale. The new bias table is added as is; V2's continuous position-bias MLP encodes
  2-D window offsets and is not used along time.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, WindowAttention
from timm.models.swin_transformer_v2 import SwinTransformerV2, SwinTransformerV2Block
from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
from torch import nn

from adaptkit.backbones.base import BackboneFamily, ChainedBlocks, RunBlock, SpatialContext, register_backbone
from adaptkit.backbones.timm_common import fused_qkv_is_called, timm_projections, timm_qkv
from adaptkit.errors import VideoInputError
from adaptkit.layers import RelativeTemporalBias
from adaptkit.layers.attention import AttentionProjections, self_attention


class _TimmSwinFamily(BackboneFamily):
    """What timm's Swin V1 and V2 share: stages, windowed attention, ClassifierHead pooling."""

    hierarchical = True
    temporal_embedding = False
    model_class: ClassVar[type[nn.Module]]
    block_class: ClassVar[type[nn.Module]]
    attention_class: ClassVar[type[nn.Module]]

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return isinstance(image_model, cls.model_class)

    def validate(self) -> None:
        unsupported = {type(b).__name__ for b in self.blocks() if not isinstance(b, self.block_class)}
        if unsupported:
            raise TypeError(
                f"timm {self.model_class.__name__} with block type(s) {sorted(unsupported)} is not supported: "
                f"adaptkit adapts timm's {self.block_class.__name__}"
            )
        if not all(callable(getattr(b, "_attn", None)) for b in self.blocks()):
            raise TypeError(
                f"this timm version's {self.block_class.__name__} has no _attn(x) (its windowed attention step, "
                f"which adaptkit re-uses); install timm>=1.0.15"
            )
        self.require_attention(self.attention_class)
        head = self.model.head
        if not isinstance(head, ClassifierHead) or head.global_pool.is_identity() or head.global_pool.feat_mult() != 1:
            raise TypeError(
                f"timm {self.model_class.__name__} with global_pool={self.model.global_pool!r} is not supported: "
                f"a video model pools every frame to one vector; build it with global_pool='avg'"
            )

    @property
    def embed_dim(self) -> int:
        return self.model.num_features

    def blocks(self) -> ChainedBlocks:
        return ChainedBlocks([stage.blocks for stage in self.model.layers])

    def forward_blocks(self, x: torch.Tensor, spatial: SpatialContext, run_block: RunBlock) -> torch.Tensor:
        index = 0
        for stage in self.model.layers:
            x = stage.downsample(x)  # (B*T, H, W, C) -> (B*T, H/2, W/2, C') from the second stage on
            for _ in range(len(stage.blocks)):
                x = run_block(index, x, spatial)
                index += 1
        return x

    def temporal_block_choices(self) -> dict[str, list[int]]:
        # timm builds the even blocks of every stage with regular windows (W-MSA) and the odd ones shifted.
        # "unshifted" = the even ones, as in the paper (12 of Swin-B's 24), even where a feature map no larger
        # than the window turns the odd ones' shift off too (Swin-B's last stage at 224).
        unshifted, start = [], 0
        for stage in self.model.layers:
            unshifted += range(start, start + len(stage.blocks), 2)
            start += len(stage.blocks)
        return {"unshifted": unshifted, "all": list(range(start))}

    def check_frame_size(self, height: int, width: int) -> None:
        patch_embed = self.model.patch_embed
        ph, pw = patch_embed.patch_size
        if patch_embed.strict_img_size:
            eh, ew = patch_embed.img_size
            if (height, width) != (eh, ew):
                raise VideoInputError(
                    f"frame size {height}x{width} does not fit this Swin: its windows and shift masks are built for "
                    f"{eh}x{ew} frames, the only valid size. Resize frames to {eh}x{ew}, or build the model with "
                    f"dynamic_img_size=True to accept any size divisible by the patch size {ph}x{pw}"
                )
        elif not patch_embed.dynamic_img_pad and (height % ph or width % pw):
            raise VideoInputError(
                f"frame size {height}x{width} is not a multiple of the patch size {ph}x{pw}; this Swin (built with "
                f"dynamic_img_size=True) accepts any size divisible by {ph}x{pw}"
            )

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        return self.model.patch_embed(frames), {}  # (B*T, H, W, C): timm's Swin works channels-last

    def pre_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # timm normalises every token, then the head pools over space (its classifier ``fc`` is stashed).
        return self.model.forward_head(self.model.norm(x), pre_logits=True)

    def head_paths(self) -> list[str]:
        return ["head.fc"]

    def final_norm_paths(self) -> list[str]:
        return ["norm"]

    def lora_targets(self) -> list[str]:
        # SwinV2 with q/v biases calls F.linear on qkv.weight, bypassing the module: target the output projection.
        return ["qkv"] if fused_qkv_is_called(self.blocks()[0].attn) else ["attn.proj"]

    # ---------------------------------------------------------------- block level
    def block_dim(self, block: nn.Module) -> int:
        return block.dim

    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return block(x)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attn

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        """Full attention over the sequences of ``x`` as given: no windows, no position bias.

        The windowed spatial attention needs the block (shift, mask): see :meth:`attend_space`.
        """
        return self_attention(self.attention_projections(attn), x)

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        self._refuse_spatial(spatial)
        return timm_projections(attn)

    def _refuse_spatial(self, spatial: SpatialContext | None) -> None:
        if spatial is not None:
            raise TypeError(
                f"{self.name}: the window attention's bias and shift mask depend on the window, not on the tokens; "
                f"spatial attention is the block's own (attend_space)"
            )

    def attend_space(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        return block._attn(x)  # (B*T, H, W, C) in and out: shift, windows, window bias and mask

    def new_temporal_bias(self, block: nn.Module, num_frames: int) -> nn.Module:
        return RelativeTemporalBias(num_frames, block.attn.num_heads)

    def drop_path1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.drop_path1(y)

    def drop_path2(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.drop_path2(y)

@register_backbone
class TimmSwin(_TimmSwinFamily):
    """Swin V1: pre-norm blocks, scaled dot-product window attention with a bias table."""

    name = "timm_swin"
    description = "timm SwinTransformer (windowed attention in stages; AIM's Swin variant)"
    model_class = SwinTransformer
    block_class = SwinTransformerBlock
    attention_class = WindowAttention

    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.norm1(x)

    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return y

    def norm2(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.norm2(x)

    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        return block.mlp(xn)


@register_backbone
class TimmSwinV2(_TimmSwinFamily):
    """Swin V2: res-post-norm blocks, cosine window attention with a learned per-head logit scale."""

    name = "timm_swinv2"
    description = "timm SwinTransformerV2 (res-post-norm, cosine window attention in stages)"
    model_class = SwinTransformerV2
    block_class = SwinTransformerV2Block
    attention_class = WindowAttentionV2

    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x  # post-norm: the attention sees the raw residual stream

    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.norm1(y)

    def norm2(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x

    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        return block.norm2(block.mlp(xn))

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        self._refuse_spatial(spatial)
        return timm_projections(attn, qkv=lambda x: _cosine_qk(attn, timm_qkv(attn, x)), scale=1.0)


def _cosine_qk(attn: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """V2's cosine attention as plain dot products: unit q and k per head, q times the logit scale.

    Packed (*, 3, heads, d) in and out. The frozen per-head logit scale is clamped as timm does
    (at most 100).
    """
    q, k, v = qkv.unbind(-3)  # (*, heads, d) each
    logit_scale = torch.clamp(attn.logit_scale, max=math.log(1.0 / 0.01)).exp().view(-1, 1)  # (heads, 1)
    return torch.stack((F.normalize(q, dim=-1) * logit_scale, F.normalize(k, dim=-1), v), dim=-3)
