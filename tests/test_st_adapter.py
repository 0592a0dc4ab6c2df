"""ST-Adapter: the adapter against a written-out reference, prefix tokens, grids, placements, the paper's counts.

The shared invariants (identity at initialisation, batch independence, frame order, gradients,
save/load and unload) run for every family in tests/test_matrix.py.
"""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import adaptkit
from adaptkit.layers import STAdapter
from adaptkit.strategies.st_adapter import STAdapterBlock
from conftest import BACKBONES, randomize_trainable


def _reference_update(adapter: STAdapter, grid: torch.Tensor, frames: int) -> torch.Tensor:
    """(B*T, h, w, D) -> (B*T, h, w, D): down, a per-channel (3, 1, 1) conv over time written as shifts, up."""
    z = adapter.down(grid).unflatten(0, (-1, frames))  # (B, T, h, w, C)
    w = adapter.conv.weight[:, 0, :, 0, 0]  # (C, 3): taps for frames t-1, t, t+1
    previous = torch.cat((torch.zeros_like(z[:, :1]), z[:, :-1]), dim=1)
    following = torch.cat((z[:, 1:], torch.zeros_like(z[:, :1])), dim=1)
    mixed = previous * w[:, 0] + z * w[:, 1] + following * w[:, 2] + adapter.conv.bias
    return adapter.up(mixed.flatten(0, 1))


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), frames=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4))
def test_adapter_is_down_temporal_depthwise_conv_up(batch, frames, h, w):
    adapter = STAdapter(dim=8, hidden=4, kernel=(3, 1, 1))
    randomize_trainable(adapter)
    grid = torch.randn(batch * frames, h, w, 8)
    with torch.no_grad():
        torch.testing.assert_close(adapter(grid, frames), _reference_update(adapter, grid, frames), atol=1e-5, rtol=1e-5)


def test_fresh_adapter_update_is_exactly_zero():
    adapter = STAdapter(dim=8, hidden=4)
    assert torch.equal(adapter(torch.randn(6, 2, 3, 8), 3), torch.zeros(6, 2, 3, 8))


@pytest.mark.parametrize("backbone", ["timm_vit_registers_layerscale_avg", "timm_deit_distilled", "open_clip_tower"])
def test_prefix_tokens_pass_through_and_patch_tokens_change(backbone):
    factory, size = BACKBONES[backbone]
    vm = adaptkit.inject(factory(), "st-adapter", num_frames=3, num_classes=5)
    randomize_trainable(vm)
    block: STAdapterBlock = vm.family.blocks()[0]
    prefix = vm.family.num_prefix_tokens
    grid = vm.family.patch_grid(size, size)
    x = torch.randn(6, prefix + grid[0] * grid[1], vm.family.embed_dim)
    with torch.no_grad():
        adapted = block._adapt(block.attn_adapter, x, {"grid": grid}, 3)
    assert torch.equal(adapted[:, :prefix], x[:, :prefix])
    assert not torch.allclose(adapted[:, prefix:], x[:, prefix:])


def test_a_hybrid_vit_uses_its_patch_grid_not_its_stems_stride():
    """A ResNet stem's first convolution has stride 2; the patches are cut from its output (stride 4) by 8x8."""
    def hybrid():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_r_s16_p8_224", img_size=64, embed_dim=32, depth=1, num_heads=2)

    vm = adaptkit.inject(hybrid(), "st-adapter", num_frames=2, num_classes=None).eval()
    assert vm.family.patch_grid(64, 64) == (2, 2) and vm.architecture["patch_size"] == [8, 8]
    lp = adaptkit.inject(hybrid(), "linear-probe", num_frames=2, num_classes=None).eval()
    video = torch.randn(1, 3, 2, 64, 64)
    with torch.no_grad():
        assert torch.equal(vm(video), lp(video))
        randomize_trainable(vm)
        assert not torch.allclose(vm(video), lp(video))


@settings(max_examples=8, deadline=None)
@given(grid_h=st.integers(1, 5), grid_w=st.integers(1, 5), frames=st.integers(1, 4))
def test_non_square_frames_use_the_recorded_grid(grid_h, grid_w, frames):
    """Spatial kernels need the true (h, w): a 2x3 grid must not be read as 3x2."""
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              dynamic_img_size=True)
    vm = adaptkit.inject(model, "st-adapter", num_frames=3, num_classes=4, kernel=(3, 3, 3)).eval()
    randomize_trainable(vm)
    video = torch.randn(2, 3, frames, 8 * grid_h, 8 * grid_w)
    with torch.no_grad():
        out = vm(video)
        # Changing one clip's pixels far from another clip's never leaks (grid regrouping stays within a clip).
        changed = video.clone()
        changed[1] += 1.0
        assert torch.equal(vm(changed)[0], out[0])
    assert out.shape == (2, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("backbone", ["timm_vit", "timm_swinv2"])
@pytest.mark.parametrize("positions, per_block", [("attn", (True, False)), ("mlp", (False, True)),
                                                  ("attn+mlp", (True, True))])
def test_placements_start_as_the_image_model_and_model_time(backbone, positions, per_block):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    lp = adaptkit.inject(factory(), "linear-probe", num_frames=3, num_classes=None).eval()
    torch.manual_seed(0)
    vm = adaptkit.inject(factory(), "st-adapter", num_frames=3, num_classes=None, positions=positions).eval()
    blocks = vm.family.blocks()
    assert all((b.attn_adapter is not None, b.mlp_adapter is not None) == per_block for b in blocks)
    video = torch.randn(2, 3, 3, size, size)
    with torch.no_grad():
        assert torch.equal(vm(video), lp(video))  # same seed, same image model: identity at initialisation
        randomize_trainable(vm)
        assert not torch.allclose(vm(video), vm(video.flip(2)), atol=1e-4)


def test_swin_adapters_work_on_each_stages_grid():
    factory, size = BACKBONES["timm_swin"]
    vm = adaptkit.inject(factory(), "st-adapter", num_frames=3, num_classes=5)
    widths = [b.attn_adapter.down.in_features for b in vm.family.blocks()]
    assert widths == [24, 24, 48, 48]
    assert [b.attn_adapter.conv.in_channels for b in vm.family.blocks()] == [12, 12, 24, 24]


@pytest.mark.parametrize(
    "options, message",
    [({"kernel": (3, 2, 1)}, "odd"), ({"kernel": (3, 1)}, "3 odd"), ({"positions": "ffn"}, "attn\\+mlp"),
     ({"ratio": 0}, "ratio"), ({"layers": "top:9"}, "has 2")],
)
def test_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        adaptkit.inject(BACKBONES["timm_vit"][0](), "st-adapter", **options)


def test_vit_b16_counts_beside_the_paper():
    """Paper (ViT-B/16, K400, 8 frames x 3 views): ~7M tunable, 455 GFLOPs. 384 channels, kernel (3, 1, 1)."""
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_clip_224")
    vm = adaptkit.inject(model, "st-adapter", num_frames=8, num_classes=400)
    total, tunable = adaptkit.count_parameters(vm)
    per_adapter = (768 * 384 + 384) + (384 * 3 + 384) + (384 * 768 + 768)  # down, depthwise conv, up
    assert tunable == 12 * per_adapter + 768 * 400 + 400 == 7_417_744
    assert total == 86_107_024 + 12 * per_adapter  # the linear probe's total plus the adapters
    gmacs = adaptkit.count_flops(vm, image_size=224, views=3)
    assert abs(gmacs - 455) / 455 < 0.005
    # Adapters see 196 of 197 tokens: 2 * 768 * 384 MACs each, plus 3 per channel for the conv.
    plain = 421.514366976
    assert gmacs - plain == pytest.approx(3 * 8 * 12 * 196 * (2 * 768 * 384 + 3 * 384) / 1e9, rel=1e-3)
