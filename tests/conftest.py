"""Tiny models of every backbone family, and helpers shared by the core tests."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

import adaptkit

TINY = dict(embed_dim=32, depth=2, num_heads=2)


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, **{**TINY, "img_size": 32, "patch_size": 8, **kwargs})


def _open_clip_tower() -> nn.Module:
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0, output_dim=16)


def _open_clip_model() -> nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    vision = CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text)


# name -> (factory, frame size). Every registered family appears at least once.
BACKBONES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "timm_vit": (_timm("vit_tiny_patch16_224"), 32),
    "timm_vit_registers_layerscale_avg": (
        _timm("vit_tiny_patch16_224", reg_tokens=2, init_values=0.1, global_pool="avg", fc_norm=True), 32),
    "timm_vit_no_class_token": (_timm("vit_tiny_patch16_224", class_token=False, global_pool="avg"), 32),
    "timm_vit_map_pool": (_timm("vit_tiny_patch16_224", global_pool="map"), 32),
    "timm_deit_distilled": (_timm("deit_tiny_distilled_patch16_224"), 32),
    "timm_eva_rope": (lambda: timm.create_model("eva02_tiny_patch14_224", **TINY, img_size=28, patch_size=14), 28),
    "timm_beit_relpos": (_timm("beitv2_base_patch16_224", init_values=0.1), 32),
    "open_clip_tower": (_open_clip_tower, 32),
    "open_clip_clip": (_open_clip_model, 32),
}

# Strategy -> options small enough for tiny models.
STRATEGIES: dict[str, dict] = {
    "aim": {},
    "linear-probe": {},
    "space-only": {},
    "timesformer": {},
    "lora": {"r": 2},
}


def build(backbone: str, strategy: str = "aim", num_frames: int = 3, num_classes: int | None = 5, **options):
    """(image_model, video_model, frame_size) with seeded random weights."""
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    image_model = factory()
    video_model = adaptkit.inject(image_model, strategy, num_frames=num_frames, num_classes=num_classes,
                                  **{**STRATEGIES.get(strategy, {}), **options})
    return image_model, video_model, size


def image_features(image_model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The untouched image model's own pooled per-frame features (B*T, D), through its public API."""
    visual = getattr(image_model, "visual", image_model)
    if hasattr(visual, "forward_head"):  # timm
        return visual.forward_head(visual.forward_features(frames), pre_logits=True)
    tower = copy.deepcopy(visual)  # open_clip: its output without CLIP's projection
    tower.proj = None
    return tower(frames)


def randomize_trainable(video_model: nn.Module, std: float = 0.5, seed: int = 1) -> None:
    """Give every trainable tensor random values (fresh adapters are exactly neutral)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in video_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * std)


@pytest.fixture(params=list(BACKBONES))
def backbone(request) -> str:
    return request.param


@pytest.fixture(params=list(STRATEGIES))
def strategy(request) -> str:
    return request.param
