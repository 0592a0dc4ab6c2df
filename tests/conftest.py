"""Tiny models of every backbone family, tiny options for every strategy, and helpers shared by the core tests.

The family x strategy matrix (tests/test_matrix.py) is built from these two tables and from the
registries: a registered family or strategy without an entry here fails ``test_every_registered_
family_and_strategy_has_cases``.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

import adaptkit

# Under pytest-xdist (`-n auto`: one test process per core) a second intra-op thread per process would oversubscribe
# the cores; most tests are tiny models that one thread runs as fast.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

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


SWINS = {"v1": "swin_tiny_patch4_window7_224", "v2": "swinv2_tiny_window8_256"}
SWIN_TINY = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 4), img_size=32, window_size=4, num_classes=7)


def tiny_swin(version: str, seed: int = 0, **kwargs) -> nn.Module:
    """A tiny random Swin (8x8 patches: windows of 4 with a real shift in stage 1; stage 2 is one window).

    Its norms are random too: SwinV2 zero-inits its post-norms, which would hide every branch.
    """
    torch.manual_seed(seed)
    model = timm.create_model(SWINS[version], **{**SWIN_TINY, **kwargs})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


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
    "timm_swin": (lambda: tiny_swin("v1"), 32),
    "timm_swinv2": (lambda: tiny_swin("v2"), 32),
}

# Strategy -> options small enough for tiny models. Every registered strategy appears.
STRATEGIES: dict[str, dict] = {
    "aim": {},
    "linear-probe": {},
    "space-only": {},
    "timesformer": {},
    "lora": {"r": 2},
    "st-adapter": {},
    "zero-i2v": {},
}

TEMPORAL = {"aim", "timesformer", "st-adapter", "zero-i2v"}
"""Strategies that model time: their output depends on frame order."""
IDENTITY_AT_INIT_WITH = {"zero-i2v": {"temporal_offsets": []}}
"""Strategies that start as the image model only with these options (zero-i2v's temporal heads look at other frames)."""


@functools.cache
def family_of(backbone: str) -> adaptkit.BackboneFamily:
    """The family instance of a tiny backbone case (a throw-away model; for its name and class attributes)."""
    from adaptkit.backbones import find_family

    return find_family(BACKBONES[backbone][0]())


def refusal(backbone: str, strategy: str) -> Exception | None:
    """The error a strategy's ``check_backbone`` raises for this backbone case, or None if it accepts it."""
    from adaptkit.strategies import make_strategy

    try:
        make_strategy(strategy, STRATEGIES[strategy]).check_backbone(family_of(backbone))
    except (TypeError, ValueError) as error:
        return error
    return None


PAIRS = [(b, s) for b in BACKBONES for s in STRATEGIES if refusal(b, s) is None]
"""Every (backbone case, strategy) the strategy accepts: the matrix."""
REFUSED = [(b, s) for b in BACKBONES for s in STRATEGIES if refusal(b, s) is not None]
"""The pairs a strategy refuses through ``check_backbone`` (tested for a clear message instead)."""


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


matrix = pytest.mark.parametrize("backbone, strategy", PAIRS)
"""Parametrise a test over every accepted (backbone case, strategy) pair."""


@pytest.fixture(autouse=True)
def _registries_restored():
    """A test that registers a strategy or family of its own (README examples, plugins) leaves the registries as
    they were, so the matrix's guard and later tests see the built-in ones only."""
    from adaptkit.backbones import base as backbones_base
    from adaptkit.strategies import base as strategies_base

    strategies, families = dict(strategies_base._STRATEGIES), list(backbones_base._FAMILIES)
    yield
    strategies_base._STRATEGIES.clear()
    strategies_base._STRATEGIES.update(strategies)
    backbones_base._FAMILIES[:] = families
