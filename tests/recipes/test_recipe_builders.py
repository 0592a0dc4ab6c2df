"""Backbone weights (and the refusal of silent random init), optimizer groups, the per-iteration schedule."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

from recipe_fixtures import synthetic_args  # noqa: F401 - pytest fixtures
from recipes import train
from recipes._builders import (
    RANDOM_INIT,
    WeightsError,
    backbone_tensors,
    build_optimizer,
    build_scheduler,
    build_video_model,
    create_image_model,
    is_torchscript,
    save_image_weights,
    warmup_cosine,
)
from recipes._config import ConfigError, ModelConfig, OptimConfig, load_config

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def tiny_model_config(**fields) -> ModelConfig:
    return ModelConfig(**{"name": "vit_tiny_patch16_224", "kwargs": dict(TINY), **fields})


def test_random_init_is_refused_without_the_flag() -> None:
    with pytest.raises(WeightsError, match="allow_random_init") as error:
        create_image_model(tiny_model_config())
    assert "frozen" in str(error.value) and "garbage" in str(error.value)
    model, source = create_image_model(tiny_model_config(allow_random_init=True))
    assert source == RANDOM_INIT and isinstance(model, timm.models.VisionTransformer)


def test_train_recipe_refuses_to_start_on_a_random_backbone(tmp_path: Path, synthetic_args) -> None:
    with pytest.raises(WeightsError, match="allow_random_init"):
        train.main(synthetic_args(tmp_path / "run") + ["model.allow_random_init=false"])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_pretrained_tag_is_an_error_before_any_download() -> None:
    with pytest.raises(WeightsError, match="no downloadable weights"):
        create_image_model(tiny_model_config(name="vit_tiny_patch16_224.no_such_tag"))
    with pytest.raises(WeightsError, match="keep one"):
        create_image_model(tiny_model_config(name="vit_tiny_patch16_224.augreg_in21k", pretrained="other"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_file_is_loaded_exactly(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(3)
    reference = timm.create_model("vit_tiny_patch16_224", **TINY)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    model, source = create_image_model(tiny_model_config(checkpoint=str(path)))
    assert str(path) in source
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_checkpoint_problems_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_image_model(tiny_model_config(checkpoint=str(tmp_path / "missing.pt")))
    wrong = tmp_path / "wrong.safetensors"  # a deeper model's weights: strict loading refuses
    save_file({k: v.contiguous() for k, v in timm.create_model("vit_tiny_patch16_224", **{**TINY, "depth": 2})
               .state_dict().items()}, wrong)
    with pytest.raises(WeightsError, match="wrong.safetensors"):
        create_image_model(tiny_model_config(checkpoint=str(wrong)))
    pickled = tmp_path / "pickled.pt"  # arbitrary pickled objects are refused by weights_only loading
    torch.save({"model": timm.create_model("vit_tiny_patch16_224", **TINY)}, pickled)
    with pytest.raises(WeightsError, match="pickled.pt"):
        create_image_model(tiny_model_config(checkpoint=str(pickled)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("family, name, kwargs", [
    ("vit", "vit_tiny_patch16_224", TINY),
    ("swin", "swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 4, "window_size": 4, "embed_dim": 16,
                                             "depths": [1, 1], "num_heads": [1, 2]}),
])
@pytest.mark.parametrize("head", [21841, 0], ids=["in21k_head", "headless"])
def test_a_checkpoint_with_another_classifier_or_none_loads(tmp_path: Path, suffix: str, family: str, name: str,
                                                            kwargs: dict, head: int) -> None:
    # The video model replaces the image classifier, so the file's head (ImageNet-21k, or none) must not matter.
    torch.manual_seed(3)
    reference = timm.create_model(name, **kwargs, num_classes=head)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, path)
    else:  # as DistributedDataParallel training saves it: wrapped, every name with the "module." prefix
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model, _ = create_image_model(ModelConfig(name=name, kwargs=dict(kwargs), checkpoint=str(path)))
    assert model.state_dict().keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(model.state_dict()[key], tensor), key


@pytest.mark.parametrize("source", ["timm", "open_clip"])
def test_a_torchscript_checkpoint_is_refused_with_the_way_out(tmp_path: Path, source: str) -> None:
    archive = tmp_path / "ViT-B-16.pt"  # OpenAI's CLIP files are TorchScript archives
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI's files remain
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(archive))
    config = tiny_model_config(checkpoint=str(archive), source=source,
                               **({"name": "ViT-B-32", "kwargs": {}} if source == "open_clip" else {}))
    with pytest.raises(WeightsError, match=r"is a TorchScript archive .* pretrained tag .*torch\.jit\.load"):
        create_image_model(config)
    plain = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), plain)
    assert not is_torchscript(plain)


def test_a_checkpoint_of_another_architecture_still_fails_in_one_short_line(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.safetensors"  # deeper, and a 21841-class head: the head is not the only problem
    save_file({k: v.contiguous() for k, v in timm.create_model(
        "vit_tiny_patch16_224", **{**TINY, "depth": 12}, num_classes=21841).state_dict().items()}, wrong)
    with pytest.raises(WeightsError) as error:
        create_image_model(tiny_model_config(checkpoint=str(wrong)))
    message = str(error.value)
    assert "Unexpected key(s)" in message and "and 129 more" in message  # 11 blocks x 12 tensors - 3 named
    assert "\n" not in message and ".." not in message and len(message) < 800


def test_backbone_lr_multiplier_and_cpu_optimizer(synthetic_args, tmp_path: Path) -> None:
    config = load_config("synthetic_motion", synthetic_args(tmp_path)[2:] + ["optim.backbone_lr_mult=0.1", "optim.lr=1e-3"])
    image_model, _ = create_image_model(config.model)
    model = build_video_model(config, image_model, num_classes=4)
    optimizer = build_optimizer(model, config.optim, torch.device("cpu"))
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-3) and groups["adapters"]["lr"] == pytest.approx(1e-4)
    assert all(g["lr"] == pytest.approx(1e-3 if g["role"] == "head" else 1e-4) for g in optimizer.param_groups)
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad}
    assert groups["adapters"]["weight_decay"] == config.optim.weight_decay
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and len(groups["head_no_decay"]["params"]) == 1
    assert not optimizer.defaults["fused"]


def test_no_decay_none_decays_every_trainable_tensor(synthetic_args, tmp_path: Path) -> None:
    # The AIM authors' code decays biases and the temporal embedding too; the paper configs say optim.no_decay: none.
    config = load_config("synthetic_motion", synthetic_args(tmp_path)[2:] + [
        "optim.no_decay=none", "optim.temporal_embed_lr_mult=10"])
    image_model, _ = create_image_model(config.model)
    model = build_video_model(config, image_model, num_classes=4)
    optimizer = build_optimizer(model, config.optim, torch.device("cpu"))
    assert {g["name"] for g in optimizer.param_groups} >= {"head_no_decay", "temporal_embedding"}
    assert all(g["weight_decay"] == config.optim.weight_decay for g in optimizer.param_groups)
    with pytest.raises(ConfigError, match="optim.no_decay"):
        load_config("synthetic_motion", ["optim.no_decay=bias"])


@pytest.mark.parametrize("name", ["k400_vitb16_8x16", "ssv2_vitl14_32f", "diving48_vitb16_8f", "k700_vitl14_16x8"])
def test_paper_configs_decay_as_the_authors_code(name: str) -> None:
    assert load_config(name, []).optim.no_decay == "none"


def test_schedule_is_linear_warmup_then_cosine_per_iteration() -> None:
    factor = warmup_cosine(warmup_steps=4, total_steps=12, min_ratio=0.1)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)
    assert factor(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(12) == pytest.approx(0.1)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = build_scheduler(optimizer, OptimConfig(lr=2.0, warmup_epochs=0.5), steps_per_epoch=8, total_steps=16)
    lrs = []
    for _ in range(16):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # 0.5 epoch x 8 steps of warmup
    assert lrs[4] == pytest.approx(2.0) and all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register a tiny open_clip model config (32x32 images, one block) and return its name."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_config")
    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    (folder / "adaptkit-test-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return "adaptkit-test-tiny-clip"


def test_open_clip_backbone_weights(tiny_open_clip: str, tmp_path: Path) -> None:
    import open_clip

    with pytest.raises(WeightsError, match="model.pretrained"):
        create_image_model(ModelConfig(name=tiny_open_clip, source="open_clip"))
    torch.manual_seed(5)
    reference = open_clip.create_model(tiny_open_clip)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    visual, source = create_image_model(ModelConfig(name=tiny_open_clip, source="open_clip", checkpoint=str(path)))
    assert str(path) in source and visual.__class__.__name__ == "VisionTransformer"
    for name, tensor in reference.visual.state_dict().items():
        assert torch.equal(visual.state_dict()[name], tensor), name


@pytest.mark.parametrize("prefix", ["", "visual."])
def test_an_open_clip_image_tower_alone_loads(tiny_open_clip: str, tmp_path: Path, prefix: str) -> None:
    import open_clip

    torch.manual_seed(6)
    reference = open_clip.create_model(tiny_open_clip).visual
    path = tmp_path / "visual.pt"
    torch.save({prefix + k: v for k, v in reference.state_dict().items()}, path)
    visual, _ = create_image_model(ModelConfig(name=tiny_open_clip, source="open_clip", checkpoint=str(path)))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(visual.state_dict()[name], tensor), name
    torch.save({k: v[..., :1] if k.endswith("proj") else v for k, v in reference.state_dict().items()}, path)
    with pytest.raises(WeightsError, match="image tower: .*size mismatch for proj"):
        create_image_model(ModelConfig(name=tiny_open_clip, source="open_clip", checkpoint=str(path)))


def test_open_clip_says_random_init_only_for_a_backbone_that_stays_random(
        tiny_open_clip: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # open_clip logs "No pretrained weights loaded ... initialized randomly" for every model built without weights:
    # true for a random run, wrong where a saved backbone or a file's image tower is loaded right after.
    import open_clip

    def warned(**kwargs: Any) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            create_image_model(ModelConfig(name=tiny_open_clip, source="open_clip", **kwargs.pop("model", {})),
                               **kwargs)
        return any("No pretrained weights loaded" in record.getMessage() for record in caplog.records)

    assert warned(model={"allow_random_init": True})  # the run's backbone stays random: said
    saved = tmp_path / "image_model.safetensors"
    save_image_weights(backbone_tensors(create_image_model(
        ModelConfig(name=tiny_open_clip, source="open_clip", allow_random_init=True))[0]), saved)
    assert not warned(model={"allow_random_init": True}, weights_file=saved)  # its saved copy is loaded
    tower = tmp_path / "tower.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(tiny_open_clip).visual.state_dict().items()},
              str(tower))
    assert not warned(model={"checkpoint": str(tower)})  # a file holding the image tower only
    assert not warned(model={"pretrained": "openai"}, load_weights=False)  # a shape-only build
    assert warned(model={"allow_random_init": True})  # the filter is gone afterwards


def test_train_on_an_open_clip_backbone(tiny_open_clip: str, tmp_path: Path) -> None:
    config = tmp_path / "open_clip.yaml"
    config.write_text(f"""\
name: tiny_open_clip
model: {{name: {tiny_open_clip}, source: open_clip, allow_random_init: true}}
data:
  source: synthetic
  synthetic: {{train_videos: 8, val_videos: 4, size: 32}}
  num_frames: 4
  batch_size: 4
  num_workers: 0
  augment: {{crop_size: 32}}
train: {{max_steps: 2, global_batch_size: 4, output_dir: {tmp_path / "run"}, num_threads: 1}}
eval: {{num_clips: 1}}
""")
    summary = train.main(["--config", str(config)])
    assert summary["step"] == 2 and summary["weights"] == RANDOM_INIT and summary["eval"]["num_videos"] == 4
    assert (tmp_path / "run" / "final" / "image_model.safetensors").is_file()


@pytest.mark.parametrize("strategy", ["aim", "timesformer"])
def test_temporal_embedding_lr_multiplier(synthetic_args, tmp_path: Path, strategy: str) -> None:
    """optim.temporal_embed_lr_mult moves the temporal embedding, and only it, to its own group at lr * mult (no
    weight decay), for every strategy that has one; every trainable tensor stays in exactly one group."""
    config = load_config("synthetic_motion", synthetic_args(tmp_path)[2:] + [
        "optim.temporal_embed_lr_mult=10", "optim.lr=1e-3", "optim.backbone_lr_mult=0.5"])
    config.model.strategy, config.model.options = strategy, {}
    image_model, _ = create_image_model(config.model)
    model = build_video_model(config, image_model, num_classes=4)
    optimizer = build_optimizer(model, config.optim, torch.device("cpu"))
    groups = {g["name"]: g for g in optimizer.param_groups}
    embedding = groups["temporal_embedding"]
    assert [id(p) for p in embedding["params"]] == [id(model.temporal_embed.weight)]
    assert embedding["lr"] == pytest.approx(1e-3 * 0.5 * 10) and embedding["weight_decay"] == 0.0
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each exactly once
    assert all(g["lr"] == pytest.approx(1e-3 if g["role"] == "head" else 5e-4)
               for g in optimizer.param_groups if g["name"] != "temporal_embedding")
    with pytest.raises(Exception, match="optim.temporal_embed_lr_mult"):
        load_config("synthetic_motion", synthetic_args(tmp_path)[2:] + ["optim.temporal_embed_lr_mult=-1"])


def test_layers_the_backbone_lacks_are_named_as_a_model_option() -> None:
    # The depth is known only once the image model is built: the refusal still reads like the config's other option
    # errors ("model.options: ..."), for every strategy with a layers option.
    for strategy, layers, said in (("aim", "top:5", "layers='top:5' asks for 5 blocks but the backbone has 2"),
                                   ("st-adapter", "[0,7]", "layers [7] are out of range for a backbone with 2 blocks"),
                                   ("zero-i2v", "every:1", None)):
        config = load_config("synthetic_motion", [f"model.strategy={strategy}", "model.options={}",
                                                  f"model.options.layers={layers}"])
        image_model, _ = create_image_model(config.model)
        if said is None:  # a selection the backbone has builds as before
            assert build_video_model(config, image_model, num_classes=4).strategy_name == strategy
            continue
        with pytest.raises(ConfigError) as error:
            build_video_model(config, image_model, num_classes=4)
        assert str(error.value) == f"model.options: {said}"
