"""ZeroI2V: the head shift, the self-checking merge, the merged model's counts, and its plain-state-dict checkpoint.

The shared invariants (batch independence, frame order, gradients, save/load and unload of the
unmerged model) run in tests/test_matrix.py on every family zero-i2v accepts.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import adaptkit
from adaptkit.layers import LinearAdapter, shift_heads
from adaptkit.strategies import zero_i2v
from conftest import BACKBONES, randomize_trainable

CASES = ["timm_vit", "timm_deit_distilled", "open_clip_tower", "open_clip_clip"]


def _model(backbone: str, seed: int = 0, **options) -> tuple[adaptkit.VideoModel, int]:
    factory, size = BACKBONES[backbone]
    torch.manual_seed(seed)
    vm = adaptkit.inject(factory(), "zero-i2v", num_frames=3, num_classes=5, **options)
    randomize_trainable(vm, std=0.3)  # adapters far from the identity
    return vm.eval(), size


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 2), frames=st.integers(1, 5), heads=st.integers(1, 4), data=st.data())
def test_shift_heads_takes_each_temporal_heads_values_from_its_offset_frame(batch, frames, heads, data):
    offsets = tuple(data.draw(st.lists(st.integers(-3, 3), min_size=0, max_size=heads)))
    x = torch.randn(batch * frames, 2, heads, 3)
    out = shift_heads(x, frames, offsets)
    clips, shifted = x.view(batch, frames, 2, heads, 3), out.view(batch, frames, 2, heads, 3)
    for t in range(frames):
        for h in range(heads):
            source = t + offsets[h] if h < len(offsets) and 0 <= t + offsets[h] < frames else t
            assert torch.equal(shifted[:, t, :, h], clips[:, source, :, h])


@pytest.mark.parametrize("backbone", CASES)
def test_one_frame_clips_see_no_neighbour_and_equal_the_image_model(backbone):
    """With T=1 every temporal head falls back to its own frame: a fresh model is the image model."""
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    lp = adaptkit.inject(factory(), "linear-probe", num_frames=1, num_classes=None).eval()
    torch.manual_seed(0)
    vm = adaptkit.inject(factory(), "zero-i2v", num_frames=1, num_classes=None).eval()
    video = torch.randn(2, 3, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(vm(video), lp(video), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", CASES)
def test_merged_equals_unmerged_on_random_weights_with_the_plain_models_parameters(backbone):
    vm, size = _model(backbone)
    video = torch.randn(2, 3, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = vm(video)
        reversed_before = vm(video.flip(2))
    assert vm.merge() is vm and vm.merged
    assert not any(isinstance(m, LinearAdapter) for m in vm.modules())
    with torch.no_grad():
        after = vm(video)
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
        assert not torch.allclose(after, vm(video.flip(2)), atol=1e-4)  # still models time: the head assignment
        torch.testing.assert_close(vm(video.flip(2)), reversed_before, rtol=1e-5, atol=1e-5 * before.abs().max().item())
    factory, _ = BACKBONES[backbone]
    plain = adaptkit.inject(factory(), "linear-probe", num_frames=3, num_classes=5)
    assert adaptkit.count_parameters(vm) == adaptkit.count_parameters(plain)
    assert {n for n, p in vm.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    with pytest.raises(RuntimeError, match="already merged"):
        vm.merge()


def test_vit_b16_merged_costs_exactly_the_plain_image_model():
    """ViT-B/16, 8 frames x 3 views: 421.5 GMACs like the linear probe (AIM: 606); unmerged it trains 14.5M."""
    with torch.device("meta"):
        vm = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224"), "zero-i2v", num_frames=8, num_classes=400)
        plain = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224"), "linear-probe", num_frames=8,
                                num_classes=400)
    adapter = 768 * 192 + 192 + 192 * 768 + 768
    assert adaptkit.count_parameters(vm)[1] == 12 * 4 * adapter + 768 * 400 + 400 == 14_509_456
    plain_gmacs = adaptkit.count_flops(plain, image_size=224, views=3)
    assert abs(plain_gmacs - 421.5) < 0.05
    assert adaptkit.count_flops(vm, image_size=224, views=3) > plain_gmacs  # the adapters, before merging
    vm.merge_and_unload()  # PEFT's name; on the meta device nothing can be compared, so nothing is checked
    assert adaptkit.count_parameters(vm) == adaptkit.count_parameters(plain) == (86_107_024, 307_600)
    assert adaptkit.count_flops(vm, image_size=224, views=3) == pytest.approx(plain_gmacs, rel=1e-12)


def test_a_broken_merge_is_refused_with_the_measured_difference_and_undone(monkeypatch):
    vm, size = _model("timm_vit")
    video = torch.randn(2, 3, 3, size, size)
    with torch.no_grad():
        before = vm(video)
    state = {k: v.clone() for k, v in vm.state_dict().items()}
    fold = zero_i2v.fold_after

    def off_by_a_little(weight, bias, adapter):
        w, b = fold(weight, bias, adapter)
        return w * 1.001, b  # the kind of slip a hand-written merge script makes

    monkeypatch.setattr(zero_i2v, "fold_after", off_by_a_little)
    with pytest.raises(adaptkit.MergeError, match=r"changed the features by \d\.\d+e-0\d .*tolerance 1e-05"):
        vm.merge()
    assert not vm.merged and sum(isinstance(m, LinearAdapter) for m in vm.modules()) == 4 * 2
    assert list(vm.state_dict()) == list(state) and all(torch.equal(vm.state_dict()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(vm(video), before)
    monkeypatch.undo()
    vm.merge(tolerance=1e-5)  # the correct fold passes


def test_merged_model_saves_a_plain_state_dict_and_loads_back(tmp_path):
    factory, size = BACKBONES["timm_vit"]
    torch.manual_seed(0)
    pristine = factory()
    vm = adaptkit.inject(copy.deepcopy(pristine), "zero-i2v", num_frames=3, num_classes=5, temporal_offsets=[1, -1])
    randomize_trainable(vm, std=0.3)
    vm.eval().merge()
    vm.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "image_model.safetensors"]
    assert set(load_file(str(tmp_path / "adapter_model.safetensors"))) == {"head.weight", "head.bias"}

    plain = factory()  # any timm model of the architecture takes the merged weights as they are
    result = plain.load_state_dict(load_file(str(tmp_path / "image_model.safetensors")), strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and not result.unexpected_keys

    loaded = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path)
    assert loaded.merged and loaded.strategy.temporal_offsets == (1, -1)
    video = torch.randn(2, 3, 3, size, size)
    with torch.no_grad():
        assert torch.equal(loaded(video), vm(video))
    assert adaptkit.count_parameters(loaded)[0] == adaptkit.count_parameters(vm)[0]


def test_unload_after_merge_gives_the_image_model_with_the_merged_weights():
    vm, size = _model("open_clip_tower")
    vm.merge()
    merged = vm.backbone_state_dict()
    image_model = vm.unload()
    state = image_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in merged.items())
    assert all(p.requires_grad for p in image_model.parameters())  # flags as they were before inject


@pytest.mark.parametrize("options, error, message", [
    ({"temporal_offsets": [1, -1, 1]}, adaptkit.StrategyOptionError, "has 2 heads"),
    ({"temporal_offsets": "1"}, adaptkit.StrategyOptionError, "list of frame offsets"),
    ({"temporal_offsets": [-4, 1], "num_frames": 4}, adaptkit.StrategyOptionError, "reaches past a clip of 4"),
    ({"ratio": 0}, adaptkit.StrategyOptionError, "ratio"),
])
def test_invalid_options(options, error, message):
    with pytest.raises(error, match=message):
        adaptkit.inject(BACKBONES["timm_vit"][0](), "zero-i2v", **options)


def test_a_model_without_projection_biases_is_refused():
    model = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8,
                              qkv_bias=False)
    with pytest.raises(TypeError, match="needs biases"):
        adaptkit.inject(model, "zero-i2v")


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_layer_scale_is_refused_on_real_and_meta_models_alike(device):
    """The cost tools build meta models: a strategy inject refuses on the real model must be refused there too."""
    with torch.device(device):
        scaled = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32,
                                   patch_size=8, init_values=0.1)
        plain = timm.create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2, img_size=32,
                                  patch_size=8)
    with pytest.raises(TypeError, match="cannot fold an adapter through a layer scale"):
        adaptkit.inject(scaled, "zero-i2v")
    assert adaptkit.inject(plain, "zero-i2v").strategy_name == "zero-i2v"
