"""Adapters that would silently do nothing, and adapters loaded onto another architecture, are refused."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch

import adaptkit
from conftest import BACKBONES, randomize_trainable

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=32, patch_size=8, num_classes=10)


def _untouched(image_model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    state = image_model.state_dict()
    return list(state) == list(before) and all(torch.equal(state[k], v) for k, v in before.items())


# ----------------------------------------------------------------------------- wrapped modules must matter
@pytest.mark.parametrize(
    "backbone, targets, modules, working",
    [
        # nn.MultiheadAttention reads out_proj.weight directly: a LoRA on out_proj is never called (PEFT #2200).
        ("open_clip_tower", ["out_proj"], "transformer.resblocks.0.attn.out_proj", "['attn']"),
        # Beit with q/v biases feeds qkv.weight to F.linear, bypassing the module.
        ("timm_beit_relpos", ["qkv"], "blocks.0.attn.qkv", "['attn.proj']"),
    ],
)
def test_lora_on_a_module_the_model_never_calls_is_refused(backbone, targets, modules, working):
    image_model = BACKBONES[backbone][0]()
    before = {k: v.clone() for k, v in image_model.state_dict().items()}
    with pytest.raises(ValueError, match="never called by the model's forward") as error:
        adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3, target_modules=targets)
    message = str(error.value)
    assert modules in message and working in message and "\n" not in message
    assert _untouched(image_model, before) and all(p.requires_grad for p in image_model.parameters())
    adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3)  # the family's default targets work


def test_lora_on_a_module_whose_output_is_discarded_is_refused():
    """Called, but multiplied by a zero layer scale: it would train nothing."""
    image_model = timm.create_model("vit_tiny_patch16_224", **TINY, init_values=0.1)
    with torch.no_grad():
        for block in image_model.blocks:
            block.ls1.gamma.zero_()
    with pytest.raises(ValueError, match=r"called but without effect on the output: blocks.0.attn.proj, blocks.1"):
        adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3, target_modules=["attn.proj"])
    adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3, target_modules=["fc1"])


def test_lora_whose_default_targets_are_cut_off_by_the_weights_says_so():
    """The family's own targets are cut off by zero weights after them (as timm's random SwinV2 post-norms are):
    naming those same targets again would not help."""
    image_model = timm.create_model("vit_tiny_patch16_224", **TINY, init_values=0.1)
    with torch.no_grad():
        for block in image_model.blocks:
            block.ls1.gamma.zero_()
    with pytest.raises(ValueError, match=r"without effect on the output: blocks.0.attn.qkv, blocks.1") as error:
        adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3)
    message = str(error.value)
    assert "timm_vit's default targets (['qkv'])" in message and "load the pretrained weights" in message
    assert "Use target_modules" not in message and "\n" not in message


def test_lora_targets_that_match_nothing_are_refused_with_the_working_ones():
    image_model = BACKBONES["timm_vit"][0]()
    before = {k: v.clone() for k, v in image_model.state_dict().items()}
    with pytest.raises(ValueError, match=r"^lora: target_modules \['foo'\] match no module of this timm_vit model\. "
                                         r"Use target_modules that work on timm_vit: \['qkv'\] \(the default\)\.$"):
        adaptkit.inject(image_model, "lora", num_frames=2, num_classes=3, target_modules=["foo"])
    assert _untouched(image_model, before) and all(p.requires_grad for p in image_model.parameters())


def test_the_check_leaves_no_gradients_behind_and_the_model_in_train_mode():
    vm = adaptkit.inject(BACKBONES["timm_vit"][0](), "lora", num_frames=2, num_classes=3, r=2)
    assert all(p.grad is None for p in vm.parameters()) and vm.training


def test_the_check_runs_on_the_meta_device_for_counting():
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_224", **TINY)
    vm = adaptkit.inject(model, "lora", num_frames=2, num_classes=3)
    assert adaptkit.count_parameters(vm)[1] > 0
    with torch.device("meta"):
        clip = BACKBONES["open_clip_tower"][0]()
    with pytest.raises(ValueError, match="never called"):
        adaptkit.inject(clip, "lora", num_frames=2, num_classes=3, target_modules=["out_proj"])


# ----------------------------------------------------------------------------- architecture identity
def _quickgelu_and_gelu():
    torch.manual_seed(0)
    quick = timm.create_model("vit_base_patch16_clip_quickgelu_224", **TINY)
    plain = timm.create_model("vit_base_patch16_clip_224", **TINY)
    plain.load_state_dict(quick.state_dict())  # same shapes, same weights: only the activation differs
    return quick, plain


def test_identity_records_the_architecture(tmp_path):
    quick, _ = _quickgelu_and_gelu()
    vm = adaptkit.inject(quick, "aim", num_frames=2, num_classes=3)
    vm.save_pretrained(tmp_path)
    import json

    recorded = json.loads((tmp_path / "adapter_config.json").read_text())["backbone"]
    assert recorded == {
        "family": "timm_vit", "class": "VisionTransformer", "architecture": "vit_base_patch16_clip_quickgelu_224",
        "activation": "QuickGELU", "norm": "LayerNorm(eps=1e-05)", "patch_size": [8, 8], "image_size": [32, 32],
        "embed_dim": 32, "widths": [32], "num_heads": [2], "depth": 2, "prefix_tokens": 1, "pooling": "token",
        "tensors": recorded["tensors"],
    }
    assert "blocks.*.attn.qkv.weight (96, 32)" in recorded["tensors"] and "cls_token (1, 1, 32)" in recorded["tensors"]
    assert not any(name.startswith("head") for name in recorded["tensors"])  # the image head is replaced anyway
    swin = adaptkit.inject(BACKBONES["timm_swin"][0](), "lora", num_frames=2, num_classes=3, r=2)
    assert swin.strategy_config["backbone"]["widths"] == [24, 48]
    assert swin.strategy_config["backbone"]["num_heads"] == [2, 4]


def test_an_adapter_from_a_quickgelu_clip_is_refused_on_a_gelu_clip(tmp_path):
    quick, plain = _quickgelu_and_gelu()
    vm = adaptkit.inject(copy.deepcopy(quick), "aim", num_frames=2, num_classes=3)
    randomize_trainable(vm)
    vm.save_pretrained(tmp_path)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.raises(adaptkit.ArchitectureMismatchError, match=r"differ in activation, architecture \(activation: "
                       r"'QuickGELU' in the checkpoint, 'GELU' here; architecture: 'vit_base_patch16_clip_quickgelu_224' "
                       r"in the checkpoint, 'vit_base_patch16_clip_224' here\)\. Pass ignore_architecture_mismatch") as e:
        adaptkit.from_pretrained(plain, tmp_path)
    assert isinstance(e.value, TypeError) and e.value.differences == {
        "activation": ("QuickGELU", "GELU"), "architecture": ("vit_base_patch16_clip_quickgelu_224",
                                                            "vit_base_patch16_clip_224")}
    assert _untouched(plain, before) and all(p.requires_grad for p in plain.parameters())

    with pytest.warns(UserWarning, match="loading anyway"):
        forced = adaptkit.from_pretrained(plain, tmp_path, ignore_architecture_mismatch=True)
    video = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        vm.eval()
        assert not torch.allclose(forced(video), vm(video))  # why the check exists: the logits change
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right architecture loads without a word
        same = adaptkit.from_pretrained(copy.deepcopy(quick), tmp_path)
    with torch.no_grad():
        assert torch.equal(same(video), vm(video))


@pytest.mark.parametrize("change, key", [({"patch_size": 16, "img_size": 32}, "patch_size"),
                                         ({"norm_layer": torch.nn.LayerNorm}, "norm")])
def test_other_mismatches_that_keep_every_shape_are_refused(tmp_path, change, key):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **TINY)
    adaptkit.inject(model, "linear-probe", num_frames=2, num_classes=3).save_pretrained(tmp_path)
    other = timm.create_model("vit_tiny_patch16_224", **{**TINY, **change})
    with pytest.raises(TypeError, match=f"differ in .*{key}"):
        adaptkit.from_pretrained(other, tmp_path)


# Options that add or drop tensors, or change what is pooled, change the function the adapters were trained on.
@pytest.mark.parametrize("change, keys", [
    ({"reg_tokens": 4}, {"prefix_tokens"}),  # the tensor list, implied, is left out when other keys differ
    ({"global_pool": "map"}, {"pooling"}),
    ({"class_token": False, "global_pool": "avg"}, {"pooling", "prefix_tokens"}),
    ({"qk_norm": True}, {"tensors"}),
    ({"init_values": 1e-5}, {"tensors"}),
    ({"pre_norm": True}, {"tensors"}),
    ({"no_embed_class": True}, {"tensors"}),
    ({"pos_embed": "none"}, {"tensors"}),
    ({"scale_attn_norm": True}, {"tensors"}),
])
def test_model_options_that_change_the_function_are_refused(tmp_path, change, keys):
    torch.manual_seed(0)
    adaptkit.inject(timm.create_model("vit_tiny_patch16_224", **TINY), "aim", num_frames=2, num_classes=3
                    ).save_pretrained(tmp_path)
    with pytest.raises(adaptkit.ArchitectureMismatchError, match="in the checkpoint|only here") as error:
        adaptkit.from_pretrained(timm.create_model("vit_tiny_patch16_224", **{**TINY, **change}), tmp_path)
    assert set(error.value.differences) == keys


def test_the_image_head_and_older_checkpoints_do_not_block_a_load(tmp_path):
    import json

    torch.manual_seed(0)
    vm = adaptkit.inject(timm.create_model("vit_tiny_patch16_224", **TINY), "aim", num_frames=2, num_classes=3).eval()
    randomize_trainable(vm)
    vm.save_pretrained(tmp_path)
    video = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        expected = vm(video)
    # Another image head (or none): the video model drops it, so it is not part of the identity.
    other_head = timm.create_model("vit_tiny_patch16_224", **{**TINY, "num_classes": 0})
    other_head.load_state_dict(vm.unload().state_dict(), strict=False)
    # A checkpoint written before the identity had prefix_tokens / pooling / tensors is compared on what it has.
    config_file = tmp_path / "adapter_config.json"
    config = json.loads(config_file.read_text())
    for key in ("prefix_tokens", "pooling", "tensors"):
        del config["backbone"][key]
    config_file.write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = adaptkit.from_pretrained(other_head, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(video), expected)


def test_open_clips_dropped_projection_is_not_part_of_the_identity(tmp_path):
    """CLIP's `proj` (a bare parameter, output_dim wide) is dropped by the video model, like a timm head."""
    from open_clip.transformer import VisionTransformer

    def tower(output_dim: int) -> torch.nn.Module:
        torch.manual_seed(0)
        return VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0,
                                 output_dim=output_dim)

    vm = adaptkit.inject(tower(16), "aim", num_frames=2, num_classes=3).eval()
    randomize_trainable(vm)
    vm.save_pretrained(tmp_path)
    assert not any(name.startswith("proj") for name in vm.architecture["tensors"])
    video = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(adaptkit.from_pretrained(tower(24), tmp_path)(video), vm(video))
