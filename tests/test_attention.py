"""The shared attention layers and every family's q/k/v projection hook.

Attention over frames runs on frame-folded tokens without regrouping them; it must equal the
block's own attention module applied to tokens regrouped into sequences over time (how AIM's
reference, and adaptkit before, computed it).
"""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

import adaptkit
from adaptkit.layers.attention import attend_frames, frame_self_attention, self_attention
from conftest import BACKBONES, TINY, build, family_of

# Attention variants the matrix's tiny models do not cover: q/k norms and a norm before the output
# projection (timm ViT), separate q/k/v projections with q/k norms (Eva).
VARIANTS = {
    "timm_vit_qk_norm_scale_norm": lambda: timm.create_model(
        "vit_tiny_patch16_224", **TINY, img_size=32, patch_size=8, qk_norm=True, scale_attn_norm=True),
    "timm_eva_separate_qkv_qk_norm": lambda: timm.create_model(
        "eva02_tiny_patch14_224", **TINY, img_size=28, patch_size=14, qkv_fused=False, qk_norm=True),
    "timm_eva_grouped_query": lambda: timm.create_model(  # 2 query heads share 1 k/v head
        "eva02_tiny_patch14_224", **TINY, img_size=28, patch_size=14, attn_type="rope", qkv_fused=False,
        num_kv_heads=1, qk_norm=True),
}


def _video_model(backbone: str) -> adaptkit.VideoModel:
    if backbone not in VARIANTS:
        return build(backbone)[1]
    torch.manual_seed(0)
    model = VARIANTS[backbone]()
    with torch.no_grad():  # q/k norms start as identities: move them off
        for name, p in model.named_parameters():
            if "q_norm" in name or "k_norm" in name or ".norm." in name:
                p.add_(torch.randn_like(p) * 0.3)
    return adaptkit.inject(model, "aim", num_frames=3, num_classes=5)

# Hierarchical families (Swin) attend in windows of stage-wide tokens; test_swin.py checks their attention.
FLAT = [name for name in BACKBONES if not family_of(name).hierarchical]

TOLERANCE = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-5, rtol=1e-5)}


def _module_over_time(family_name: str, attn: torch.nn.Module, x: torch.Tensor, frames: int) -> torch.Tensor:
    """The attention module's own forward on sequences over time (regrouped), without position machinery."""
    xt = rearrange(x, "(b t) n d -> (b n) t d", t=frames)
    if family_name == "open_clip_vit":
        if not attn.batch_first:
            xs = xt.transpose(0, 1)  # (T, B*N, D): sequence-first
            out = attn(xs, xs, xs, need_weights=False)[0].transpose(0, 1)
        else:
            out = attn(xt, xt, xt, need_weights=False)[0]
    elif family_name == "timm_eva":
        out = attn(xt, rope=None)
    elif family_name == "timm_beit":
        attn = copy.deepcopy(attn)
        attn.relative_position_bias_table = None  # the spatial bias has no meaning along time
        out = attn(xt, shared_rel_pos_bias=None)
    else:
        out = attn(xt)
    return rearrange(out, "(b n) t d -> (b t) n d", n=x.shape[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backbone", [*FLAT, *VARIANTS, "open_clip_tower_sequence_first"])
def test_attention_over_frames_equals_the_module_on_regrouped_sequences(backbone, dtype):
    sequence_first = backbone.endswith("_sequence_first")
    vm = _video_model(backbone.removesuffix("_sequence_first"))
    vm = vm.to(dtype).eval()
    family = vm.family
    attn = family.attention(family.blocks()[0].block)
    if sequence_first:
        attn.batch_first = False  # older open_clip: same weights, (L, S, D) inputs
    batch, frames, tokens = 2, 4, 3
    x = torch.randn(batch * frames, tokens, family.embed_dim, dtype=dtype, requires_grad=True)
    got = family.attend_frames(attn, x, frames)
    expected = _module_over_time(family.name, attn, x, frames)
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])
    if dtype == torch.float64:
        (grad,) = torch.autograd.grad(got.square().sum(), x)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), x)
        torch.testing.assert_close(grad, expected_grad, **TOLERANCE[dtype])


@pytest.mark.parametrize("backbone", [*FLAT, *VARIANTS])
def test_spatial_projections_reproduce_the_modules_own_attention(backbone):
    """With a spatial context, the hook includes RoPE (Eva) and the relative position bias (Beit)."""
    vm = _video_model(backbone).eval()
    size = vm.backbone.patch_embed.img_size[0] if hasattr(vm.backbone, "patch_embed") else 32
    family = vm.family
    frames = torch.randn(2, 3, size, size)
    with torch.no_grad():
        tokens, spatial = family.embed(frames)
        x = family.norm1(family.blocks()[0].block, family.pre_blocks(tokens))
        for wrapped in family.blocks():
            attn = family.attention(wrapped.block)
            expected = family.attend(attn, x, spatial)
            got = self_attention(family.attention_projections(attn, spatial), x)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_hook_hands_out_views_of_the_fused_projection():
    """Fused q/k/v are read where the projection wrote them: packed (*, 3, heads, d), no copy."""
    _, vm, _ = build("timm_vit")
    attn = vm.family.attention(vm.family.blocks()[0].block)
    x = torch.randn(6, 5, vm.family.embed_dim)
    qkv = vm.family.attention_projections(attn).qkv(x)
    assert qkv.shape == (6, 5, 3, attn.num_heads, attn.head_dim)
    assert qkv._base is not None and qkv.is_contiguous()


def _einsum_reference(qkv: torch.Tensor, frames: int, scale: float, bias: torch.Tensor | None) -> torch.Tensor:
    """Attention over frames written out: (B*T, *tokens, 3, H, d) -> (B*T, *tokens, H*d)."""
    lead = qkv.shape[:-3]
    q, k, v = qkv.reshape(-1, frames, math.prod(lead[1:]), *qkv.shape[-3:]).unbind(3)  # (B, T, N, H, d)
    logits = torch.einsum("binhd,bjnhd->bnhij", q, k) * scale
    if bias is not None:
        logits = logits + bias
    out = torch.einsum("bnhij,bjnhd->binhd", logits.softmax(-1), v)
    return out.reshape(*lead, -1)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3), frames=st.integers(1, 9), tokens=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    heads=st.integers(1, 3), head_dim=st.sampled_from([1, 4, 8, 12]), with_bias=st.booleans(),
)
def test_attend_frames_matches_an_einsum_reference_with_gradients(batch, frames, tokens, heads, head_dim, with_bias):
    """Outputs and gradients of q/k/v and of the bias, in float64, over random shapes."""
    generator = torch.Generator().manual_seed(batch * 100 + frames)
    qkv = torch.randn(batch * frames, *tokens, 3, heads, head_dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(heads, frames, frames, generator=generator, dtype=torch.float64) if with_bias else None
    inputs = [qkv] + ([bias] if with_bias else [])
    for t in inputs:
        t.requires_grad_(True)
    scale = head_dim**-0.5
    got = attend_frames(qkv, frames, scale=scale, bias=bias)
    expected = _einsum_reference(qkv, frames, scale, bias)
    assert got.shape == (batch * frames, *tokens, heads * head_dim)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    weights = torch.randn(got.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad((got * weights).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * weights).sum(), inputs)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)


def test_frame_self_attention_keeps_clips_apart_and_refuses_a_partial_clip():
    _, vm, _ = build("timm_vit")
    family = vm.family
    projections = family.attention_projections(family.attention(family.blocks()[0].block))
    x = torch.randn(2 * 3, 4, family.embed_dim)
    with torch.no_grad():
        out = frame_self_attention(projections, x, 3)
        changed = x.clone()
        changed[3:] += 1.0  # the second clip only
        assert torch.equal(frame_self_attention(projections, changed, 3)[:3], out[:3])
    with pytest.raises(ValueError, match="whole number of 3-frame clips"):
        attend_frames(torch.randn(5, 4, 3, 2, 8), 3, scale=1.0)
