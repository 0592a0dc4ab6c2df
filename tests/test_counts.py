"""Parameter and FLOP parity with the AIM paper (Tables 1-4, 7, 8), on the meta device."""

from __future__ import annotations

import pytest
import timm
import torch

import adaptkit

VIT_B = "vit_base_patch16_clip_224"
VIT_L = "vit_large_patch14_clip_224"


def _meta_timm(name: str):
    with torch.device("meta"):
        return timm.create_model(name)


def _within(value: float, target: float, tolerance: float) -> bool:
    return abs(value - target) <= tolerance * target


@pytest.mark.parametrize(
    "name, classes, options, total_m, tunable_m, gmacs_3_views",
    [
        (VIT_B, 400, {}, 96.8, 10.96, 606),  # Table 2, AIM ViT-B/16 8x3x1
        (VIT_B, 174, {"temporal_in": True, "scale": 1.0}, 100.1, 14.3, 624),  # Table 3, SSv2 variant
        (VIT_L, 400, {}, 341, 38.3, 2802),  # Table 2, AIM ViT-L/14
    ],
)
def test_aim_matches_paper(name, classes, options, total_m, tunable_m, gmacs_3_views):
    vm = adaptkit.inject(_meta_timm(name), "aim", num_frames=8, num_classes=classes, **options)
    total, tunable = adaptkit.count_parameters(vm)
    assert _within(total / 1e6, total_m, 0.005), total
    assert _within(tunable / 1e6, tunable_m, 0.01), tunable
    assert _within(adaptkit.count_flops(vm, image_size=224, views=3), gmacs_3_views, 0.01)


def test_aim_vit_b_tunable_parameters_exactly():
    """What trains, counted tensor by tensor: 3 adapters per block (768 -> 192 -> 768), the (1, 8, 768) temporal
    embedding, the final norm's trainable copy and the 400-class head; 10,966,672 as the README prints."""
    vm = adaptkit.inject(_meta_timm(VIT_B), "aim", num_frames=8, num_classes=400)
    adapter = 768 * 192 + 192 + 192 * 768 + 768
    expected = 12 * 3 * adapter + 8 * 768 + 2 * 768 + 768 * 400 + 400
    assert adaptkit.count_parameters(vm)[1] == expected == 10_966_672


@pytest.mark.parametrize("frames, gmacs", [(16, 1214), (32, 2428)])
def test_aim_flops_scale_with_frames(frames, gmacs):
    vm = adaptkit.inject(_meta_timm(VIT_B), "aim", num_frames=frames, num_classes=400)
    assert _within(adaptkit.count_flops(vm, image_size=224, views=3), gmacs, 0.01)


@pytest.mark.parametrize("frames, gmacs", [(16, 1214), (32, 2428)])
def test_count_flops_counts_the_clip_length_it_is_given(frames, gmacs):
    vm = adaptkit.inject(_meta_timm(VIT_B), "aim", num_frames=8, num_classes=400)  # built for 8, counted at 16 / 32
    assert _within(adaptkit.count_flops(vm, image_size=224, views=3, num_frames=frames), gmacs, 0.01)


def test_timesformer_baseline_matches_table_1():
    vm = adaptkit.inject(_meta_timm(VIT_B), "timesformer", num_frames=8, num_classes=174)
    total, tunable = adaptkit.count_parameters(vm)
    assert _within(total / 1e6, 121, 0.01) and tunable == total


def test_linear_probe_costs_the_plain_image_model():
    """Plain CLIP ViT-B/16 on 8 frames x 3 views is ~422 GMACs; AIM adds ~44% on top."""
    vm = adaptkit.inject(_meta_timm(VIT_B), "linear-probe", num_frames=8, num_classes=400)
    plain = adaptkit.count_flops(vm, image_size=224, views=3)
    assert _within(plain, 422, 0.01)
    total, tunable = adaptkit.count_parameters(vm)
    assert tunable == 768 * 400 + 400 and _within(total / 1e6, 86, 0.005)


@pytest.mark.parametrize(
    "options, tunable_m, tolerance",
    [
        ({"layers": "bottom:6"}, 5.6, 0.01),  # Table 7
        ({"layers": "top:6"}, 5.6, 0.01),
        ({"layers": "every:2"}, 5.6, 0.01),
        ({"ratio": 0.0625}, 3.0, 0.01),  # Table 8
        ({"ratio": 0.125}, 5.6, 0.01),
        ({"ratio": 0.5}, 21.0, 0.03),  # we count 21.59M; the paper prints "21"
    ],
)
def test_ablation_parameter_counts(options, tunable_m, tolerance):
    vm = adaptkit.inject(_meta_timm(VIT_B), "aim", num_frames=8, num_classes=400, **options)
    assert _within(adaptkit.count_parameters(vm)[1] / 1e6, tunable_m, tolerance)


def test_open_clip_vit_b16_counts_equal_timm():
    import open_clip

    with torch.device("meta"):
        clip = open_clip.create_model("ViT-B-16", device="meta")
    vm_clip = adaptkit.inject(clip, "aim", num_frames=8, num_classes=400)
    vm_timm = adaptkit.inject(_meta_timm(VIT_B), "aim", num_frames=8, num_classes=400)
    assert adaptkit.count_parameters(vm_clip) == adaptkit.count_parameters(vm_timm)
    assert adaptkit.count_flops(vm_clip, 224, views=3) == pytest.approx(adaptkit.count_flops(vm_timm, 224, views=3))


def test_count_flops_leaves_a_real_model_untouched():
    from conftest import BACKBONES

    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=2, num_classes=5)
    before = {k: v.clone() for k, v in vm.state_dict().items()}
    assert adaptkit.count_flops(vm, image_size=size, views=2) > 0
    assert all(torch.equal(v, before[k]) for k, v in vm.state_dict().items())
    assert next(vm.parameters()).device.type == "cpu"


@pytest.mark.parametrize("strategy", ["aim", "space-only", "timesformer", "linear-probe", "st-adapter", "lora"])
def test_meta_flop_count_equals_a_real_forward_on_a_map_pooling_vit(strategy):
    """The meta-device count is the count of a real forward pass, also where a parameter feeds a layer directly
    (the MAP head's latent query, which broke the counter when it required grad)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    image_model = timm.create_model("vit_base_patch16_siglip_224", pretrained=False, img_size=32, patch_size=8,
                                    embed_dim=32, depth=2, num_heads=2)
    assert image_model.global_pool == "map"
    vm = adaptkit.inject(image_model, strategy, num_frames=3, num_classes=5)
    counted = adaptkit.count_flops(vm, image_size=32)
    assert any(p.requires_grad for p in vm.parameters())  # the model given keeps its trainable tensors
    counter = FlopCounterMode(display=False)
    # The reference: real tensors through the math attention (CPU's fused attention is not counted by torch).
    with torch.no_grad(), counter, torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        vm.eval().requires_grad_(False)(torch.randn(1, 3, 3, 32, 32))
    assert counted == counter.get_total_flops() / 2 / 1e9 > 0


def test_count_flops_takes_the_backbones_input_size_by_default():
    image_model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    video_model = adaptkit.inject(image_model, "aim", num_frames=2, num_classes=3)
    assert adaptkit.count_flops(video_model) == adaptkit.count_flops(video_model, image_size=32) > 0
