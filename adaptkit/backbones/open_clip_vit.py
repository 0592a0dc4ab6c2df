"""open_clip ``VisionTransformer`` (and whole open_clip CLIP models, whose visual tower is used)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptkit.backbones.base import BackboneFamily, BlockLinears, LinearSite, SpatialContext, register_backbone
from adaptkit.errors import VideoInputError
from adaptkit.layers.attention import AttentionProjections

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _is_open_clip_vit(module: object) -> bool:
    # Checked by name so that importing adaptkit does not import open_clip.
    return type(module).__name__ == "VisionTransformer" and type(module).__module__.startswith("open_clip")


@register_backbone
class OpenClipViT(BackboneFamily):
    """open_clip's ViT tower. CLIP's output projection ``proj`` is dropped, as in AIM."""

    name = "open_clip_vit"
    description = "open_clip VisionTransformer, or an open_clip CLIP model (its visual tower is adapted)"

    @classmethod
    def matches(cls, image_model: nn.Module) -> bool:
        return _is_open_clip_vit(image_model) or _is_open_clip_vit(getattr(image_model, "visual", None))

    @classmethod
    def visual_tower(cls, image_model: nn.Module) -> nn.Module:
        return image_model if _is_open_clip_vit(image_model) else image_model.visual

    def validate(self) -> None:
        m = self.model
        if getattr(m, "attn_pool", None) is not None:
            raise TypeError("open_clip towers with attentional pooling (CoCa) are not supported")
        blocks = self.blocks()
        kinds = {type(b).__name__ for b in blocks}
        attentions = [b.attn for b in blocks]
        if kinds != {"ResidualAttentionBlock"} or not all(isinstance(a, nn.MultiheadAttention) for a in attentions):
            raise TypeError(
                f"open_clip blocks {sorted(kinds)} are not supported: adaptkit adapts ResidualAttentionBlock "
                f"with nn.MultiheadAttention (open_clip 2.26 - 3.3)"
            )
        if not all(a._qkv_same_embed_dim and a.bias_k is None and not a.add_zero_attn for a in attentions):
            raise TypeError(
                "open_clip attention with separate key/value widths, bias_k/bias_v or add_zero_attn is not supported "
                "(plain multi-head self-attention only)"
            )
        if self.pooling not in ("tok", "avg"):
            raise TypeError(
                f"open_clip pool_type {self.pooling!r} is not supported: a video model pools every frame to one "
                f"vector; build the tower with pool_type 'tok' or 'avg'"
            )
        if getattr(m.patch_dropout, "prob", 0.0) > 0:
            raise ValueError(
                "patch dropout drops different tokens in every frame, which breaks temporal attention; "
                "build the model with patch_dropout=0"
            )

    @property
    def embed_dim(self) -> int:
        return self.model.class_embedding.shape[-1]

    @property
    def num_prefix_tokens(self) -> int:
        return 1  # the class token

    def blocks(self) -> nn.ModuleList:
        return self.model.transformer.resblocks

    def check_frame_size(self, height: int, width: int) -> None:
        expected = tuple(self.model.image_size)
        if (height, width) != expected:
            raise VideoInputError(
                f"frame size {height}x{width} does not match the open_clip tower's image size "
                f"{expected[0]}x{expected[1]}; resize frames to {expected[0]}x{expected[1]}"
            )

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, SpatialContext]:
        m = self.model
        x = m.conv1(frames)  # (BT, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (BT, gh*gw, D)
        cls = m.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)  # (BT, 1 + gh*gw, D)
        return x + m.positional_embedding.to(x.dtype), {}

    def pre_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.ln_pre(x)

    @property
    def pooling(self) -> str:
        m = self.model
        return getattr(m, "pool_type", "avg" if getattr(m, "global_average_pool", False) else "tok")

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if getattr(m, "final_ln_after_pool", False):
            return m.ln_post(_global_pool(x, self.pooling))
        return _global_pool(m.ln_post(x), self.pooling)

    def head_paths(self) -> list[str]:
        return ["proj"]

    def final_norm_paths(self) -> list[str]:
        return ["ln_post"]

    def lora_targets(self) -> list[str]:
        # PEFT wraps nn.MultiheadAttention as a whole; targeting "out_proj" alone silently does nothing.
        return ["attn"]

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        mean = getattr(self.model, "image_mean", None) or OPENAI_MEAN
        std = getattr(self.model, "image_std", None) or OPENAI_STD
        return tuple(mean), tuple(std)

    # ---------------------------------------------------------------- block level
    def block_forward(self, block: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        if block.attn.batch_first:
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)

    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.ln_1(x)

    def attention(self, block: nn.Module) -> nn.Module:
        return block.attn

    def attend(self, attn: nn.Module, x: torch.Tensor, spatial: SpatialContext) -> torch.Tensor:
        if attn.batch_first:
            return attn(x, x, x, need_weights=False)[0]
        xs = x.transpose(0, 1)  # (L, S, D): sequence-first module
        return attn(xs, xs, xs, need_weights=False)[0].transpose(0, 1)

    def attention_projections(self, attn: nn.Module, spatial: SpatialContext | None = None) -> AttentionProjections:
        # nn.MultiheadAttention's projections are per token, so batch_first does not matter here;
        # the packed in_proj_weight rows are q, k, v in that order, each heads x head_dim.
        return AttentionProjections(
            qkv=lambda x: F.linear(x, attn.in_proj_weight, attn.in_proj_bias).unflatten(-1, (3, attn.num_heads, -1)),
            out=lambda out, x: attn.out_proj(out),
            scale=attn.head_dim**-0.5,
            dropout=attn.dropout if attn.training else 0.0,
            out_reads_tokens=False,
        )

    def linear_layers(self, block: nn.Module) -> BlockLinears | None:
        mlp = block.mlp
        if not (hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj")):
            return None
        return BlockLinears(
            LinearSite(block.attn, "in_proj_weight", "in_proj_bias"), LinearSite(block.attn.out_proj, "weight", "bias"),
            LinearSite(mlp.c_fc, "weight", "bias"), LinearSite(mlp.c_proj, "weight", "bias"),
        )

    def scale1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return block.ls_1(y)

    def drop_path1(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return y

    def norm2(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.ln_2(x)

    def mlp(self, block: nn.Module, xn: torch.Tensor) -> torch.Tensor:
        return block.ls_2(block.mlp(xn))

    def drop_path2(self, block: nn.Module, y: torch.Tensor) -> torch.Tensor:
        return y


def _global_pool(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    return x[:, 1:].mean(dim=1) if pool_type == "avg" else x[:, 0]  # 'tok' or 'avg': validate() refuses the others
