"""Several named adapter sets on one frozen backbone: switching is exact, each set saves and loads on its own."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

import adaptkit
from conftest import BACKBONES


def _randomize_active(vm: adaptkit.VideoModel, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vm.trainable_state_dict().values():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("backbone, first, second", [
    ("timm_vit", ("aim", {}), ("st-adapter", {})),
    ("open_clip_tower", ("zero-i2v", {}), ("aim", {"temporal_in": True})),
    ("timm_swin", ("st-adapter", {}), ("aim", {})),
    ("timm_vit", ("aim", {}), ("zero-i2v", {})),  # zero-i2v checks the plain blocks, not AIM's wrappers
])
def test_switching_is_bit_identical_to_models_built_with_one_set(tmp_path, backbone, first, second):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    pristine = factory()
    vm = adaptkit.inject(copy.deepcopy(pristine), first[0], num_frames=3, num_classes=5, **first[1]).eval()
    _randomize_active(vm, seed=1)
    video = torch.randn(2, 3, 3, size, size)
    with torch.no_grad():
        out_first = vm(video)
    vm.save_pretrained(tmp_path / "first")

    vm.add_adapter("second", second[0], num_classes=7, **second[1])
    assert vm.active_adapter == "default" and vm.adapter_names == ["default", "second"]
    with torch.no_grad():
        assert torch.equal(vm(video), out_first)  # added, not activated
    vm.set_adapter("second")
    assert vm.strategy.name == second[0] and vm.num_classes == 7
    _randomize_active(vm, seed=2)
    with torch.no_grad():
        out_second = vm(video)
    assert out_second.shape == (2, 7)
    vm.save_pretrained(tmp_path / "second")
    for _ in range(2):  # back and forth
        vm.set_adapter("default")
        with torch.no_grad():
            assert torch.equal(vm(video), out_first)
        vm.set_adapter("second")
        with torch.no_grad():
            assert torch.equal(vm(video), out_second)

    alone = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path / "second")
    with torch.no_grad():
        assert torch.equal(alone(video), out_second)
    shared = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path / "first")
    shared.load_adapter(tmp_path / "second", "ssv2")
    with torch.no_grad():
        assert torch.equal(shared(video), out_first)
        shared.set_adapter("ssv2")
        assert torch.equal(shared(video), out_second)


def test_training_the_active_set_leaves_the_others_untouched():
    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=3, num_classes=5)
    vm.add_adapter("other", "st-adapter")
    inactive = {n: p.clone() for n, p in vm.named_parameters() if n.startswith("adapter_sets.")}
    assert inactive and not any(n.startswith("adapter_sets.") for n in vm.trainable_state_dict())
    assert not any(p.requires_grad for n, p in vm.named_parameters() if n.startswith("adapter_sets."))  # as PEFT
    trainable, _ = vm.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in vm.trainable_state_dict().values())
    groups = vm.param_groups(weight_decay=0.05)
    assert sum(len(g["params"]) for g in groups) == len(vm.trainable_state_dict())
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    vm(torch.randn(2, 3, 3, size, size)).square().mean().backward()
    optimizer.step()
    assert all(torch.equal(p, inactive[n]) for n, p in vm.named_parameters() if n.startswith("adapter_sets."))
    vm.set_adapter("other")  # its own flags come back with it
    assert {n for n, p in vm.named_parameters() if p.requires_grad} == set(vm.trainable_state_dict()) != set()


def test_one_backbone_for_two_tasks_saves_the_backbone_once():
    """ViT-B/16: K400 (aim, 400 classes) and SSv2 (aim with temporal_in, 174 classes) as two sets."""
    with torch.device("meta"):
        k400 = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224"), "aim", num_frames=8, num_classes=400)
        ssv2 = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224"), "aim", num_frames=8, num_classes=174,
                               temporal_in=True, scale=1.0)
        shared = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224"), "aim", num_frames=8, num_classes=400)
        shared.add_adapter("ssv2", "aim", num_classes=174, temporal_in=True, scale=1.0)
    frozen = sum(p.numel() for p in shared.backbone.parameters() if not p.requires_grad)
    (total_k400, tunable_k400), (total_ssv2, tunable_ssv2) = map(adaptkit.count_parameters, (k400, ssv2))
    total_shared, _ = adaptkit.count_parameters(shared)
    assert total_shared == total_k400 + total_ssv2 - frozen == frozen + tunable_k400 + tunable_ssv2
    assert (total_k400 + total_ssv2 - total_shared) / 1e6 == pytest.approx(85.8, abs=0.05)  # one backbone saved


def test_sets_that_change_the_backbone_are_refused_and_nothing_changes():
    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=3, num_classes=5).eval()
    video = torch.randn(1, 3, 3, size, size)
    with torch.no_grad():
        before = vm(video)
    state = {k: v.clone() for k, v in vm.state_dict().items()}
    for strategy, options in (("lora", {"r": 2}), ("space-only", {}), ("timesformer", {})):
        with pytest.raises(TypeError, match=f"strategy '{strategy}' changes the backbone itself"):
            vm.add_adapter("x", strategy, **options)
        assert vm.adapter_names == ["default"] and list(vm.state_dict()) == list(state)
        with torch.no_grad():
            assert torch.equal(vm(video), before)
    lora = adaptkit.inject(factory(), "lora", num_frames=3, num_classes=5, r=2)
    with pytest.raises(TypeError, match="strategy 'lora' changes the backbone itself"):
        lora.add_adapter("x", "aim")


def test_names_deletion_merge_and_unload():
    factory, size = BACKBONES["timm_vit"]
    torch.manual_seed(0)
    image_model = factory()
    original = {k: v.clone() for k, v in image_model.state_dict().items()}
    vm = adaptkit.inject(image_model, "zero-i2v", num_frames=3, num_classes=5)
    vm.add_adapter("b", "aim")
    for bad in ("b", "default", "a.b", ""):
        with pytest.raises(ValueError, match="taken or invalid"):
            vm.add_adapter(bad, "aim")
    with pytest.raises(adaptkit.StrategyOptionError, match="adapter sets share the model's num_frames=3"):
        vm.add_adapter("c", "aim", num_frames=8)
    assert vm.adapter_names == ["default", "b"]
    with pytest.raises(KeyError, match="no adapter set 'c'"):
        vm.set_adapter("c")
    with pytest.raises(ValueError, match="is active"):
        vm.delete_adapter("default")
    with pytest.raises(RuntimeError, match="adapter sets \\['b'\\] share"):
        vm.merge()
    vm.set_adapter("b")
    vm.delete_adapter("default")
    assert vm.adapter_names == ["b"] and not list(vm.adapter_sets)
    vm.add_adapter("c", "st-adapter")
    restored = vm.unload()
    assert restored is image_model
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in original.items())
    assert list(restored.state_dict()) == list(original)
