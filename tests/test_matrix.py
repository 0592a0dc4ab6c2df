"""Every registered strategy x every registered backbone family: build, run, and the behaviour invariants.

Built from the registries through conftest's tables: pairs a strategy refuses in ``check_backbone``
are tested for a clear refusal instead, and a guard fails when a family or strategy has no case.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

import adaptkit
from conftest import BACKBONES, IDENTITY_AT_INIT_WITH, PAIRS, REFUSED, STRATEGIES, TEMPORAL, family_of, image_features
from conftest import matrix, refusal
from conftest import randomize_trainable


def _fresh(backbone: str, strategy: str, num_frames: int = 3, **options):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    image_model = factory()
    reference = copy.deepcopy(image_model).eval()
    video_model = adaptkit.inject(image_model, strategy, num_frames=num_frames, num_classes=5,
                                  **{**STRATEGIES[strategy], **options})
    return image_model, reference, video_model, size


def _video(size: int, batch: int = 2, frames: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


@matrix
def test_builds_and_runs(backbone, strategy):
    _, _, vm, size = _fresh(backbone, strategy)
    assert vm(_video(size)).shape == (2, 5)
    assert vm.forward_features(_video(size)).shape == (2, vm.family.embed_dim)
    assert vm.num_frames == 3 and vm.strategy_name == strategy
    config = vm.strategy_config
    assert json.loads(json.dumps(config)) == config
    assert config["strategy"] == strategy and config["backbone"]["family"] == vm.family.name


def test_no_head_returns_features(backbone):
    factory, size = BACKBONES[backbone]
    vm = adaptkit.inject(factory(), "aim", num_frames=2, num_classes=None).eval()
    with torch.no_grad():
        assert torch.equal(vm(_video(size, frames=2)), vm.forward_features(_video(size, frames=2)))
    assert vm(_video(size, frames=2)).shape == (2, vm.family.embed_dim)


@matrix
def test_identity_at_initialisation(backbone, strategy):
    """A fresh model's logits are the head applied to the time-mean of the image model's features."""
    _, reference, vm, size = _fresh(backbone, strategy, **IDENTITY_AT_INIT_WITH.get(strategy, {}))
    vm.eval()
    video = _video(size, batch=2, frames=3)
    frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*T, C, H, W)
    with torch.no_grad():
        expected = vm.head(image_features(reference, frames).view(2, 3, -1).mean(dim=1))
        assert torch.equal(vm(video), expected)


@matrix
def test_batch_independence(backbone, strategy):
    """Changing clip j never changes clip i's output."""
    _, _, vm, size = _fresh(backbone, strategy)
    randomize_trainable(vm)
    vm.eval()
    video = _video(size, batch=3)
    changed = video.clone()
    changed[1] = torch.randn_like(changed[1])
    with torch.no_grad():
        out, out_changed = vm(video), vm(changed)
    assert torch.equal(out[0], out_changed[0]) and torch.equal(out[2], out_changed[2])
    assert not torch.allclose(out[1], out_changed[1])


@matrix
def test_frame_order_sensitivity_exactly_when_temporal(backbone, strategy):
    _, _, vm, size = _fresh(backbone, strategy)
    randomize_trainable(vm)
    vm.eval()
    video = _video(size, frames=3)
    with torch.no_grad():
        out, reversed_out = vm(video), vm(video.flip(2))
    if strategy in TEMPORAL:
        assert not torch.allclose(out, reversed_out, atol=1e-4)
    else:  # per-frame model + mean over time: order only changes the summation order
        torch.testing.assert_close(out, reversed_out, atol=1e-5, rtol=1e-5)


def test_aim_without_temporal_adaptation_is_order_invariant(backbone):
    _, _, vm, size = _fresh(backbone, "aim", temporal=False)
    assert vm.temporal_embed is None
    randomize_trainable(vm)
    vm.eval()
    video = _video(size)
    with torch.no_grad():
        torch.testing.assert_close(vm(video), vm(video.flip(2)), atol=1e-5, rtol=1e-5)


@matrix
def test_gradients_only_where_trainable(backbone, strategy):
    _, _, vm, size = _fresh(backbone, strategy)
    randomize_trainable(vm, std=0.1)  # non-zero second adapter layers so every weight gets signal
    vm.train()
    vm(_video(size)).square().mean().backward()
    trainable = {n for n, p in vm.named_parameters() if p.requires_grad}
    assert trainable, "a strategy must train something"
    for name, p in vm.named_parameters():
        if name in trainable:
            assert p.grad is not None, f"trainable {name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


def test_aim_trains_exactly_adapters_temporal_embedding_final_norm_and_head(backbone):
    _, _, vm, _ = _fresh(backbone, "aim")
    trainable = [n for n, p in vm.named_parameters() if p.requires_grad]
    adapter_names = ("temporal_adapter.", "spatial_adapter.", "mlp_adapter.", "temporal_bias.")
    final_norms = tuple(f"backbone.{p}." for p in vm.family.final_norm_paths())
    for name in trainable:
        assert (any(a in name for a in adapter_names) or name.startswith(("head.", "temporal_embed.") + final_norms)), name
    depth = len(vm.family.blocks())
    assert sum(".spatial_adapter.fc1.weight" in n for n in trainable) == depth
    assert ("temporal_embed.weight" in trainable) == vm.family.temporal_embedding and "head.weight" in trainable


@matrix
def test_unload_round_trip_is_bit_identical(backbone, strategy):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    image_model = factory()
    before = {k: v.clone() for k, v in image_model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in image_model.named_parameters()}
    vm = adaptkit.inject(image_model, strategy, num_frames=3, num_classes=5, **STRATEGIES[strategy])
    if strategy not in ("space-only", "timesformer"):  # adapter strategies leave the image weights untouched
        optimizer = torch.optim.SGD([p for p in vm.parameters() if p.requires_grad], lr=0.1)
        randomize_trainable(vm, std=0.1)
        vm(_video(size)).square().mean().backward()
        optimizer.step()
    restored = vm.unload()
    assert restored is image_model
    after = restored.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert {n: p.requires_grad for n, p in restored.named_parameters()} == flags
    with pytest.raises(RuntimeError, match="unloaded"):
        vm(_video(size))
    # The image model can be injected again after unloading.
    adaptkit.inject(restored, strategy, num_frames=3, num_classes=5, **STRATEGIES[strategy])


@matrix
def test_save_load_round_trip(tmp_path, backbone, strategy):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    pristine = factory()
    image_model = copy.deepcopy(pristine)
    vm = adaptkit.inject(image_model, strategy, num_frames=3, num_classes=5, **STRATEGIES[strategy])
    randomize_trainable(vm, std=0.2)
    vm.eval()
    vm.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    loaded = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    video = _video(size)
    with torch.no_grad():
        assert torch.equal(loaded(video), vm(video))

    trainable_again = adaptkit.from_pretrained(copy.deepcopy(pristine), tmp_path, is_trainable=True)
    assert {n for n, p in trainable_again.named_parameters() if p.requires_grad} == set(vm.trainable_state_dict())


@matrix
def test_randomised_trainables_change_the_output(backbone, strategy):
    """Guards against silent no-ops (e.g. LoRA on a module whose forward is bypassed)."""
    _, _, vm, size = _fresh(backbone, strategy)
    vm.eval()
    video = _video(size)
    # Beyond the head, every strategy but the linear probe must change the features themselves.
    output = vm if strategy == "linear-probe" else vm.forward_features
    with torch.no_grad():
        before = output(video)
        randomize_trainable(vm)
        assert not torch.allclose(output(video), before, atol=1e-4)


def test_print_trainable_parameters_uses_peft_format(capsys):
    factory, _ = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=2, num_classes=5)
    vm.print_trainable_parameters()
    total, trainable = adaptkit.count_parameters(vm)
    assert capsys.readouterr().out == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}\n"
    )


def test_open_clip_whole_model_uses_visual_tower_and_unload_returns_clip():
    factory, size = BACKBONES["open_clip_clip"]
    clip = factory()
    vm = adaptkit.inject(clip, "aim", num_frames=2, num_classes=5)
    assert vm.backbone is clip.visual
    assert not any(n.startswith("backbone.transformer.resblocks") and "text" in n for n, _ in vm.named_parameters())
    assert adaptkit.count_parameters(vm)[0] < sum(p.numel() for p in clip.parameters())
    assert vm.unload() is clip


def test_every_registered_family_and_strategy_has_cases():
    """A new family needs a tiny model in conftest.BACKBONES, a new strategy tiny options in STRATEGIES.

    Without this, a newly registered strategy would silently get zero matrix cases.
    """
    assert {family_of(b).name for b in BACKBONES} == set(adaptkit.list_backbones())
    assert set(STRATEGIES) == set(adaptkit.list_strategies())
    assert TEMPORAL <= set(STRATEGIES)
    accepted = {s for _, s in PAIRS}
    assert accepted == set(STRATEGIES), f"strategies refused by every family: {set(STRATEGIES) - accepted}"
    families_per_strategy = {s: {family_of(b).name for b, t in PAIRS if t == s} for s in STRATEGIES}
    assert all(len(f) >= 2 for f in families_per_strategy.values()), families_per_strategy


@pytest.mark.parametrize("backbone, strategy", REFUSED)
def test_refused_pairs_say_why_and_leave_the_model_untouched(backbone, strategy):
    """A pair refused by ``check_backbone`` fails at inject with one clear line, before any surgery."""
    error = refusal(backbone, strategy)
    message = str(error)
    assert strategy in message and family_of(backbone).name in message, message
    assert "\n" not in message and len(message) < 400, message
    factory, _ = BACKBONES[backbone]
    image_model = factory()
    before = {k: v.clone() for k, v in image_model.state_dict().items()}
    with pytest.raises(type(error)):
        adaptkit.inject(image_model, strategy, num_frames=3, num_classes=5, **STRATEGIES[strategy])
    assert all(torch.equal(image_model.state_dict()[k], v) for k, v in before.items())
    assert not hasattr(getattr(image_model, "visual", image_model), "_adaptkit_injected")
    adaptkit.inject(image_model, "linear-probe", num_frames=3, num_classes=5)  # still injectable


@matrix
def test_param_groups_partition_the_trainables_by_role_and_decay(backbone, strategy):
    _, _, vm, _ = _fresh(backbone, strategy)
    names = {id(p): n for n, p in vm.named_parameters()}
    groups = vm.param_groups(weight_decay=0.05)
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(vm.trainable_state_dict())  # every trainable exactly once
    exempt = vm.no_weight_decay()
    for group in groups:
        assert group["params"] and group["name"] in (group["role"], group["role"] + "_no_decay")
        no_decay = group["name"].endswith("_no_decay")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05)
        assert all((names[id(p)] in exempt) == no_decay for p in group["params"])
    by_role = {role: {names[id(p)] for g in groups if g["role"] == role for p in g["params"]}
               for role in ("head", "adapters", "norms", "backbone")}
    assert by_role["head"] == {"head.weight", "head.bias"}
    assert all(p.ndim > 1 for n, p in vm.named_parameters() if p.requires_grad and n not in exempt)
    assert {n for n in exempt if "temporal_embed" in n or "temporal_bias" in n} == {
        n for n in vm.trainable_state_dict() if "temporal_embed" in n or "temporal_bias" in n}
    if strategy in ("space-only", "timesformer"):  # the image model's own weights train in place
        assert by_role["backbone"] and not by_role["norms"]
        own = {f"backbone.{n}" for n in getattr(vm.backbone, "no_weight_decay", lambda: set())()}
        assert own & set(vm.trainable_state_dict()) <= exempt
    else:
        assert not by_role["backbone"]
    if strategy == "aim":
        assert by_role["norms"] == {n for n in vm.trainable_state_dict()
                                    if n.startswith(tuple(f"backbone.{p}." for p in vm.family.final_norm_paths()))}


def test_param_groups_follow_the_backbones_own_no_weight_decay_list():
    factory, _ = BACKBONES["timm_beit_relpos"]
    vm = adaptkit.inject(factory(), "space-only", num_frames=2, num_classes=5)
    exempt = vm.no_weight_decay()
    assert {"backbone.cls_token", "backbone.blocks.0.attn.relative_position_bias_table"} <= exempt
    assert "backbone.blocks.0.attn.qkv.weight" not in exempt and "head.weight" not in exempt
    vm = adaptkit.inject(BACKBONES["open_clip_tower"][0](), "space-only", num_frames=2, num_classes=5)
    assert {"backbone.positional_embedding", "backbone.class_embedding"} <= vm.no_weight_decay()


def test_strategies_see_only_the_strategy_context():
    """Strategy modules never import the video model or touch its private state (one-way dependencies)."""
    import ast
    from pathlib import Path

    import adaptkit.strategies

    for file in Path(adaptkit.strategies.__file__).parent.glob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "adaptkit.model" not in imports, file.name
        private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "_restore"}
        assert not private, file.name
