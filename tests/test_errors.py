"""Bad input fails early with a message that says what was expected."""

from __future__ import annotations

import copy
import json
import re

import pytest
import timm
import torch
from torch import nn

import adaptkit
from conftest import BACKBONES


def _vit():
    torch.manual_seed(0)  # the same frozen weights every time: checkpoints load without a BackboneWeightsWarning
    return BACKBONES["timm_vit"][0]()


def test_unknown_strategy_lists_registered_ones():
    with pytest.raises(ValueError, match="registered strategies: aim, linear-probe, space-only, timesformer, lora"):
        adaptkit.inject(_vit(), "adapterformer")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['rato'\].*valid options:.*ratio"):
        adaptkit.inject(_vit(), "aim", rato=0.25)


@pytest.mark.parametrize("ratio", [-0.1, 0, 1.5, float("nan"), "0.25", True])
def test_out_of_range_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        adaptkit.inject(_vit(), "aim", ratio=ratio)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"drop_path": 1.0}, "drop_path"),
        ({"scale": -1}, "scale"),
        ({"spatial": "yes"}, "spatial"),
        ({"temporal": False, "temporal_in": True}, "temporal_in"),
        ({"spatial": False, "temporal": False, "joint": False}, "at least one"),
        ({"layers": "middle:3"}, "layers"),
        ({"layers": []}, "layers"),
        ({"layers": [0, 7]}, "out of range"),
        ({"layers": "top:9"}, "has 2"),
        ({"head_dropout": 1.0}, "head_dropout"),
    ],
)
def test_invalid_aim_options(options, message):
    with pytest.raises(ValueError, match=message):
        adaptkit.inject(_vit(), "aim", **options)


@pytest.mark.parametrize("options", [{"r": 0}, {"r": 2.5}, {"dropout": 1.0}, {"target_modules": "qkv"}])
def test_invalid_lora_options(options):
    with pytest.raises(ValueError):
        adaptkit.inject(_vit(), "lora", **options)


@pytest.mark.parametrize("num_frames, num_classes", [(0, 5), (2.5, 5), (4, 0), (4, -3)])
def test_invalid_sizes(num_frames, num_classes):
    with pytest.raises(ValueError):
        adaptkit.inject(_vit(), "aim", num_frames=num_frames, num_classes=num_classes)


def test_unsupported_model_lists_families():
    with pytest.raises(TypeError, match="supported backbone families: timm_vit, timm_eva, timm_beit, open_clip_vit"):
        adaptkit.inject(timm.create_model("test_resnet"), "aim")
    with pytest.raises(TypeError, match="cannot adapt a torch.nn.modules.linear.Linear"):
        adaptkit.inject(nn.Linear(3, 3), "aim")


def test_injecting_twice_fails_and_leaves_the_model_working():
    image_model = _vit()
    vm = adaptkit.inject(image_model, "aim", num_frames=2, num_classes=5)
    with pytest.raises(TypeError, match="already injected"):
        adaptkit.inject(image_model, "aim")
    with pytest.raises(TypeError, match="already a VideoModel"):
        adaptkit.inject(vm, "aim")
    assert vm(torch.randn(1, 3, 2, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("strategy, options", [("aim", {"layers": [0, 9]}), ("lora", {"target_modules": ["nope"]})])
def test_failed_inject_leaves_the_image_model_untouched(strategy, options):
    image_model = _vit()
    before = {k: v.clone() for k, v in image_model.state_dict().items()}
    with pytest.raises(ValueError):
        adaptkit.inject(image_model, strategy, **options)
    assert list(image_model.state_dict()) == list(before)
    assert all(torch.equal(image_model.state_dict()[k], v) for k, v in before.items())
    assert all(p.requires_grad for p in image_model.parameters())
    adaptkit.inject(image_model, "aim", num_frames=2, num_classes=5)  # still injectable


@pytest.mark.parametrize(
    "shape, error, message",
    [
        ((2, 3, 32, 32), ValueError, r"\(B, C, T, H, W\)"),
        ((2, 3, 3, 4, 32, 32), ValueError, r"\(B, C, T, H, W\)"),
        ((2, 4, 3, 32, 32), ValueError, r"permute\(0, 2, 1, 3, 4\)"),  # (B, T, C, H, W) given
        ((2, 3, 4, 48, 48), ValueError, "32x32"),
    ],
)
def test_bad_video_shapes(shape, error, message):
    vm = adaptkit.inject(_vit(), "aim", num_frames=4, num_classes=5)
    with pytest.raises(error, match=message):
        vm(torch.randn(*shape))


def test_integer_video_is_rejected():
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    with pytest.raises(TypeError, match="float video"):
        vm(torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8))


def test_a_video_of_another_float_dtype_is_refused_outside_autocast():
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    with pytest.raises(TypeError, match=r"model's dtype torch.float32, got torch.float64: use video.to"):
        vm(torch.randn(1, 3, 2, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32 input itself, but not float64
        assert vm(torch.randn(1, 3, 2, 32, 32)).shape == (1, 5)
        with pytest.raises(TypeError, match="got torch.float64"):
            vm(torch.randn(1, 3, 2, 32, 32, dtype=torch.float64))


def _rewrite_weights(folder, tensors):
    """Replace a saved folder's weights and record their digest, as a consistent save of other tensors would."""
    from safetensors.torch import save_file

    from adaptkit.checkpoint import sha256_file

    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    config["sha256"]["adapter_model.safetensors"] = sha256_file(folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps(config))


def test_a_corrupt_adapter_file_is_named(tmp_path):
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    vm.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:7])  # cut short
    with pytest.raises(adaptkit.CorruptCheckpointError, match=f"{weights} is not the file its adapter_config.json "
                       "was saved with"):
        adaptkit.from_pretrained(_vit(), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    del config["sha256"]  # as folders saved before digests were recorded
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(adaptkit.CorruptCheckpointError, match=f"{weights} is not a readable safetensors file"):
        adaptkit.from_pretrained(_vit(), tmp_path)


@pytest.mark.parametrize("edit, named", [
    ({"sha256": []}, "sha256"),
    ({"sha256": {"other.safetensors": "0" * 64}}, "sha256"),
    ({"sha256": {"adapter_model.safetensors": 7}}, "sha256"),
    ({"backbone": "x"}, "backbone"),
    ({"options": [1]}, "options"),
    ({"num_frames": "8"}, "num_frames"),
    ({"num_frames": True}, "num_frames"),
    ({"num_classes": 0}, "num_classes"),
    ({"merged": "no"}, "merged"),
    ({"frozen_weights": "x"}, "frozen_weights"),
    ({"format_version": 99}, "unsupported format_version 99"),
    ({"format_version": None}, "format_version"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_a_malformed_adapter_config_is_refused_naming_the_key(tmp_path, edit, named):
    """A hand-edited config must not load past its checks: a sha256 that is not the file-to-digest object would
    switch the integrity check off, and a flipped weights byte would then load."""
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    vm.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # inside the last tensor: still readable safetensors, other values
    weights.write_bytes(bytes(data))
    config_file = tmp_path / "adapter_config.json"
    config = {**json.loads(config_file.read_text()), **edit}
    config_file.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(adaptkit.CorruptCheckpointError, match=re.escape(named)) as raised:
        adaptkit.from_pretrained(_vit(), tmp_path)
    assert str(config_file) in str(raised.value)


def test_a_merged_config_without_its_image_weights_digest_is_refused(tmp_path):
    vm = adaptkit.inject(_vit(), "zero-i2v", num_frames=2, num_classes=5)
    vm.merge()
    vm.save_pretrained(tmp_path)
    adaptkit.from_pretrained(_vit(), tmp_path)  # as saved: loads
    config_file = tmp_path / "adapter_config.json"
    config = json.loads(config_file.read_text())
    del config["sha256"]["image_model.safetensors"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(adaptkit.CorruptCheckpointError, match="image_model.safetensors's"):
        adaptkit.from_pretrained(_vit(), tmp_path)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "eva02_tiny_patch14_224", "beitv2_base_patch16_224"])
def test_a_timm_model_without_pooling_is_refused_at_inject(name):
    """global_pool='' (timm's feature-extraction setting) returns every token: refused up front, not at forward."""
    model = timm.create_model(name, img_size=28, patch_size=14, embed_dim=32, depth=1, num_heads=2, global_pool="")
    with pytest.raises(adaptkit.UnsupportedBackboneError, match="with global_pool='' is not supported"):
        adaptkit.inject(model, "aim")


def test_patch_dropout_is_refused():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              patch_drop_rate=0.5)
    with pytest.raises(ValueError, match="patch_drop_rate=0"):
        adaptkit.inject(model, "aim")


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    vm.save_pretrained(tmp_path)
    wider = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    expected = (r"was made on another backbone: they differ in embed_dim, widths \(embed_dim: 32 in the checkpoint, "
                r"48 here; widths: \[32\] in the checkpoint, \[48\] here\)")
    with pytest.raises(adaptkit.ArchitectureMismatchError, match=expected):
        adaptkit.from_pretrained(wider, tmp_path)
    assert all(p.requires_grad for p in wider.parameters()), "a refused load must give the model back"


def test_checkpoint_with_an_unexpected_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file

    adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["backbone.blocks.0.extra"] = torch.zeros(3)
    _rewrite_weights(tmp_path, tensors)
    fresh = _vit()
    with pytest.raises(KeyError, match=r"unexpected \['backbone.blocks.0.extra'\]"):
        adaptkit.from_pretrained(fresh, tmp_path)
    assert all(p.requires_grad for p in fresh.parameters()), "a refused load must give the model back"


def test_checkpoint_with_missing_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file

    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    vm.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors.pop("head.weight")
    _rewrite_weights(tmp_path, tensors)
    with pytest.raises(KeyError, match="missing.*head.weight"):
        adaptkit.from_pretrained(_vit(), tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        adaptkit.from_pretrained(_vit(), tmp_path / "nowhere")


def test_merging_a_strategy_that_cannot_merge_is_refused_naming_the_mergeable_ones():
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5)
    with pytest.raises(TypeError, match=r"strategy 'aim' cannot be merged.*Mergeable strategies: "):
        vm.merge()
    assert not vm.merged
    vm.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        vm.merge()


def test_every_use_after_unload_raises_one_typed_error(tmp_path):
    vm = adaptkit.inject(_vit(), "zero-i2v", num_frames=2, num_classes=3)
    vm.save_pretrained(tmp_path / "set")
    vm.unload()
    calls = {
        "run a video": lambda: vm(torch.randn(1, 3, 2, 32, 32)),
        "save an adapter": lambda: vm.save_pretrained(tmp_path / "again"),
        "merge": vm.merge,
        "build parameter groups": vm.param_groups,
        "add an adapter set": lambda: vm.add_adapter("other", "aim"),
        "load an adapter set": lambda: vm.load_adapter(tmp_path / "set", "other"),
        "unload again": vm.unload,
        "count its parameters": lambda: adaptkit.count_parameters(vm),
        "take its state_dict": vm.state_dict,
        "load a state_dict": lambda: vm.load_state_dict({}),
    }
    for action, call in calls.items():
        with pytest.raises(adaptkit.UnloadedModelError, match=f"was unloaded .*; cannot {action}$"):
            call()
    assert issubclass(adaptkit.UnloadedModelError, RuntimeError)
    assert not (tmp_path / "again").exists()


def test_save_pretrained_onto_a_file_is_refused_and_leaves_it(tmp_path):
    target = tmp_path / "adapter"
    target.write_text("mine")
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=3)
    with pytest.raises(FileExistsError, match=r"adapter is a file: save_pretrained writes a folder "
                                              r"\(adapter_config.json \+ adapter_model.safetensors\)"):
        vm.save_pretrained(target)
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("wrap, hint", [
    (lambda m: torch.compile(m), "a torch.compile wrapper: inject model._orig_mod"),
    (lambda m: nn.DataParallel(m), "a data-parallel wrapper: inject model.module"),
])
def test_a_wrapped_image_model_is_refused_with_how_to_unwrap_it(wrap, hint):
    with pytest.raises(TypeError, match=hint) as error:
        adaptkit.inject(wrap(_vit()), "aim")
    assert "\n" not in str(error.value)


def test_an_attention_adaptkit_does_not_model_is_refused_at_inject():
    # timm's differential attention has the same qkv/proj as Attention and different maths: re-applying it over
    # time as plain attention would run silently wrong.
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              attn_layer="diff")
    with pytest.raises(TypeError, match=r"timm_vit with attention \['DiffAttention'\] is not supported"):
        adaptkit.inject(model, "aim")


@pytest.mark.parametrize("shape", [(2, 3, 0, 32, 32), (0, 3, 2, 32, 32)])
def test_an_empty_video_is_refused_in_one_line(shape):
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=3)
    with pytest.raises(ValueError, match=r"expected a non-empty \(B, C, T, H, W\) video"):
        vm(torch.zeros(shape))


def test_a_video_on_another_device_is_refused_naming_both():
    vm = adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=3)
    with pytest.raises(adaptkit.VideoInputError, match="expected a video on the model's device cpu, got one on meta"):
        vm(torch.empty(1, 3, 2, 32, 32, device="meta"))


def test_zero_i2v_offsets_past_the_clip_are_refused():
    with pytest.raises(ValueError, match="reaches past a clip of 3 frames"):
        adaptkit.inject(_vit(), "zero-i2v", num_frames=3, temporal_offsets=(-1, 3))
    adaptkit.inject(_vit(), "zero-i2v", num_frames=3, temporal_offsets=(-2, 2))  # the longest that shifts anything


def test_timm_gradient_checkpointing_carries_over():
    model = _vit()
    model.set_grad_checkpointing(True)
    assert adaptkit.inject(model, "aim", num_frames=2)._grad_checkpointing
    assert not adaptkit.inject(_vit(), "aim", num_frames=2)._grad_checkpointing


def test_an_open_clip_tower_that_pools_nothing_is_refused_at_inject():
    from open_clip.transformer import VisionTransformer

    tower = VisionTransformer(image_size=32, patch_size=8, width=32, layers=1, heads=2, mlp_ratio=4.0, output_dim=16,
                              pool_type="none")
    with pytest.raises(TypeError, match="open_clip pool_type 'none' is not supported"):
        adaptkit.inject(tower, "aim")


def test_registering_a_strategy_checks_what_inject_will_need():
    import dataclasses

    from adaptkit.strategies import StrategyConfig

    class NotADataclass(StrategyConfig):
        name = "test-not-a-dataclass"

        def apply(self, context):
            pass

    @dataclasses.dataclass
    class Abstract(StrategyConfig):
        name = "test-abstract"

    @dataclasses.dataclass
    class NoName(StrategyConfig):
        def apply(self, context):
            pass

    @dataclasses.dataclass
    class NameAsOption(StrategyConfig):
        name: str = "test-name-as-option"

        def apply(self, context):
            pass

    for cls, problem in [(NotADataclass, r"not itself a @dataclasses.dataclass"),
                         (Abstract, r"leaves \['apply'\] abstract"), (NoName, "its name is"),
                         (NameAsOption, "its name is a dataclass field"),
                         (dict, "does not subclass adaptkit.StrategyConfig")]:
        with pytest.raises(TypeError, match=f"cannot register strategy .*{problem}"):
            adaptkit.register_strategy(cls)
    assert not any(name.startswith("test-") for name in adaptkit.list_strategies())
    with pytest.raises(ValueError, match="strategy 'aim' is already registered"):
        adaptkit.register_strategy(dataclasses.dataclass(type("Aim2", (StrategyConfig,), {
            "name": "aim", "apply": lambda self, context: None, "__annotations__": {}})))


def test_a_family_registered_later_takes_precedence_over_a_built_in_one():
    from adaptkit.backbones import base
    from adaptkit.backbones.timm_vit import TimmViT

    class Mine(TimmViT):
        name, description = "test_my_vit", "timm ViTs with depth 1 (a user's own family)"

        @classmethod
        def matches(cls, image_model):
            return super().matches(image_model) and len(image_model.blocks) == 1

    with pytest.raises(TypeError, match="its name is not a non-empty str"):
        adaptkit.register_backbone(type("Nameless", (TimmViT,), {"name": ""}))
    adaptkit.register_backbone(Mine)
    try:
        one_block = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                      num_heads=2)
        assert adaptkit.inject(one_block, "aim", num_frames=2).family.name == "test_my_vit"
        assert adaptkit.inject(_vit(), "aim", num_frames=2).family.name == "timm_vit"
        with pytest.raises(ValueError, match="'test_my_vit' is already registered"):
            adaptkit.register_backbone(Mine)
    finally:
        base._FAMILIES.remove(Mine)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hook, body, message", [
    ("norm1", lambda self, block, x: block.norm2(x), "composed change the tokens differently"),
    ("mlp", lambda self, block, xn: xn, "composed change the tokens differently"),
    ("scale1", lambda self, block, y: 2 * block.ls1(y), "composed change the tokens differently"),
    ("attention_projections", lambda self, attn, spatial=None: __import__("adaptkit").layers.AttentionProjections(
        qkv=lambda x: attn.qkv(x).unflatten(-1, (attn.num_heads, 3, -1)).transpose(-3, -2),  # heads and q/k/v swapped
        out=lambda out, x: attn.proj(out), scale=attn.scale), "attention_projections rebuild attend"),
])
def test_a_family_whose_hooks_do_not_rebuild_its_blocks_is_refused_at_inject(hook, body, message, dtype):
    """AIM starts as the image model whatever norm1 returns (its adapters start at zero): only a check finds it,
    in low precision and under a small layer scale too (the branch is far smaller than the tokens there)."""
    from adaptkit.backbones.timm_vit import TimmViT

    wrong = type("WrongFamily", (TimmViT,), {hook: body})
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              init_values=1e-5).to(dtype)
    adaptkit.inject(copy.deepcopy(model), "aim", num_frames=2)  # the right hooks pass on the same model
    with torch.no_grad():  # trained norms differ from each other; fresh ones (weight 1, bias 0) would not
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=f"does not describe its blocks consistently: .*{message}"):
        adaptkit.VideoModel(wrong(model), adaptkit.strategies.make_strategy("aim", {}), 2, 3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and model.training


def test_a_family_whose_pool_does_not_pool_is_named():
    from adaptkit.backbones.timm_vit import TimmViT

    family = type("NoPool", (TimmViT,), {"pool": lambda self, x: x})(_vit())
    vm = adaptkit.VideoModel(family, adaptkit.strategies.make_strategy("linear-probe", {}), 2, None)
    with pytest.raises(TypeError, match=r"pool\(\) returned shape \(4, 17, 32\), expected \(B\*T, embed_dim\)"):
        vm(torch.randn(2, 3, 2, 32, 32))


def test_unload_removes_what_a_strategy_added_and_did_not_remove():
    import dataclasses

    from adaptkit.strategies import StrategyConfig

    @dataclasses.dataclass
    class Prompts(StrategyConfig):
        name = "test-leaky-prompts"

        def apply(self, context):
            context.backbone.prompts = nn.Parameter(torch.zeros(4, context.family.embed_dim))
            context.backbone.prompt_mlp = nn.Linear(2, 2)
            context.backbone.norm.register_buffer("my_buffer", torch.ones(3))
            context.backbone.blocks[1].mlp.fc1 = nn.Linear(32, 128)  # replaced, same name and shapes

    model = _vit()
    fc1 = model.blocks[1].mlp.fc1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vm = adaptkit.VideoModel(adaptkit.backbones.find_family(model), Prompts(), 2, 3)
    with pytest.warns(UserWarning, match=r"left \['blocks.1.mlp.fc1 \(replaced\)', 'prompts', 'prompt_mlp.weight'\] "
                                         r"\.\.\. on the backbone"):
        restored = vm.unload()
    assert restored is model and not hasattr(model, "prompts") and not hasattr(model, "prompt_mlp")
    assert model.blocks[1].mlp.fc1 is fc1 and not hasattr(model.norm, "my_buffer")
    state = model.state_dict()
    assert list(state) == list(before) and all(torch.equal(state[k], v) for k, v in before.items())
    adaptkit.inject(model, "aim", num_frames=2)  # usable again


def test_lora_defaults_that_match_nothing_say_so_without_the_zero_weights_advice():
    from adaptkit.backbones.timm_vit import TimmViT

    family = type("NoQkv", (TimmViT,), {"lora_targets": lambda self: ["not_a_module"]})(_vit())
    with pytest.raises(ValueError, match=r"match no module .* These are timm_vit's default targets") as error:
        adaptkit.VideoModel(family, adaptkit.strategies.make_strategy("lora", {"r": 2}), 2, 3)
    assert "is zero in these weights" not in str(error.value)


def test_a_family_hook_that_fails_on_a_frame_is_named_at_inject():
    from adaptkit.backbones.timm_vit import TimmViT

    family = type("BadEmbed", (TimmViT,), {"embed": lambda self, frames: self.model.patch_embed(frames)})(_vit())
    with pytest.raises(TypeError, match=r"its hooks fail on one 32x32 frame \(ValueError: not enough values"):
        adaptkit.VideoModel(family, adaptkit.strategies.make_strategy("aim", {}), 2, 3)


@pytest.mark.parametrize("call, error, builtin", [
    (lambda: adaptkit.inject(nn.Linear(3, 3)), adaptkit.UnsupportedBackboneError, TypeError),
    (lambda: adaptkit.inject(_vit(), "aimm"), adaptkit.StrategyOptionError, ValueError),
    (lambda: adaptkit.inject(_vit(), "aim", ratioo=0.3), adaptkit.StrategyOptionError, TypeError),
    (lambda: adaptkit.inject(_vit(), "aim", ratio=2.0), adaptkit.StrategyOptionError, ValueError),
    (lambda: adaptkit.inject(_vit(), "timesformer", num_frames=2)(torch.randn(1, 3, 2, 16, 16)),
     adaptkit.VideoInputError, ValueError),
    (lambda: adaptkit.inject(_vit(), "aim", num_frames=2)(torch.randn(1, 3, 2, 32)), adaptkit.VideoInputError,
     ValueError),
    (lambda: adaptkit.inject(_vit(), "aim", num_frames=2).merge(), adaptkit.MergeError, TypeError),
])
def test_errors_have_an_adaptkit_class_and_keep_their_builtin_one(call, error, builtin):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, adaptkit.AdaptkitError) and isinstance(info.value, builtin)


def test_a_checkpoint_mismatch_is_typed_and_reads_as_its_message(tmp_path):
    from safetensors.torch import load_file

    adaptkit.inject(_vit(), "aim", num_frames=2, num_classes=5).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors.pop("head.bias")
    _rewrite_weights(tmp_path, tensors)
    with pytest.raises(adaptkit.CheckpointMismatchError) as info:
        adaptkit.from_pretrained(_vit(), tmp_path)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("checkpoint ") and "missing ['head.bias']" in str(info.value)


def test_no_readable_video_is_an_adaptkit_error_and_still_a_runtime_error():
    from adaptkit.errors import NoReadableVideoError

    assert adaptkit.NoReadableVideoError is NoReadableVideoError and "NoReadableVideoError" in adaptkit.__all__
    assert issubclass(NoReadableVideoError, adaptkit.AdaptkitError) and issubclass(NoReadableVideoError, RuntimeError)
