"""Every shipped config loads, validates, states its command, follows the paper, and builds (on the meta device)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import adaptkit
from recipes._builders import build_video_model, create_image_model
from recipes._config import CONFIG_DIR, DEFAULT_CONFIG, ConfigError, batch_size_fix, load_config, strategy_options

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))  # every config, whoever adds it, must load, validate and build
DATASETS = {"k400": (400, 30), "k700": (700, 30), "ssv2": (174, 50), "diving48": (48, 50)}
FRAMES = {8: 16, 16: 8, 32: 4}  # dense sampling: frames x interval
CLIP_BACKBONES = ("vitb16", "vitl14")
CLIP_GRID = [p for p in CONFIGS if p.stem.count("_") == 2 and p.stem.split("_")[1] in CLIP_BACKBONES]


def test_the_clip_grid_is_complete() -> None:
    expected = set()
    for dataset, backbone, frames in itertools.product(DATASETS, CLIP_BACKBONES, FRAMES):
        dense = dataset.startswith("k")
        expected.add(f"{dataset}_{backbone}_{frames}x{FRAMES[frames]}" if dense else f"{dataset}_{backbone}_{frames}f")
    assert {p.stem for p in CLIP_GRID} == expected
    assert CONFIG_DIR / f"{DEFAULT_CONFIG}.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_states_its_command_and_builds_on_meta(path: Path) -> None:
    config = load_config(path)
    first_line = path.read_text().splitlines()[0]
    # The default config may also say just `adaptkit train`, which runs it.
    assert first_line == f"# adaptkit train --config {path.stem}" or (
        path.stem == DEFAULT_CONFIG and first_line == "# adaptkit train")
    assert config.name == path.stem
    with torch.device("meta"):
        image_model, _ = create_image_model(config.model, load_weights=False)
        video_model = build_video_model(config, image_model, num_classes=config.data.num_classes or 4)
    assert video_model.num_frames == config.data.num_frames
    assert next(video_model.parameters()).device.type == "meta"


@pytest.mark.parametrize("path", CLIP_GRID, ids=lambda p: p.stem)
def test_paper_settings(path: Path) -> None:
    config = load_config(path)
    dataset, backbone, clip = path.stem.split("_")
    classes, epochs = DATASETS[dataset]
    large = backbone == "vitl14"
    assert config.data.num_classes == classes and config.train.epochs == epochs
    assert config.model.name == ("vit_large_patch14_clip_quickgelu_224.openai" if large
                                 else "vit_base_patch16_clip_quickgelu_224.openai")
    assert not config.model.allow_random_init
    assert (config.optim.lr, tuple(config.optim.betas), config.optim.weight_decay) == (3e-4, (0.9, 0.999), 0.05)
    assert config.optim.backbone_lr_mult == (0.1 if large else 1.0)
    assert config.train.global_batch_size == 64 and 64 % config.data.batch_size == 0
    assert config.model.options["drop_path"] == 0.2
    augment = config.data.augment
    if dataset.startswith("k"):
        frames, interval = map(int, clip.split("x"))
        assert (config.data.sampling, config.data.num_frames, config.data.frame_interval) == ("dense", frames, interval)
        assert config.data.test_convention == "mmaction2-0.x"  # the authors' test views, as the paper measured
        assert augment.hflip and augment.color_jitter == (0.4 if large else 0.0)
        assert (config.eval.num_clips, augment.test_crops) == ((3, 1) if dataset == "k400" else (3, 3))
    else:
        assert config.data.sampling == "segment" and config.data.num_frames == int(clip[:-1])
    if dataset == "ssv2":
        assert config.model.options["temporal_in"] and config.model.options["scale"] == 1.0
        assert not augment.hflip and augment.randaugment
        assert (augment.randaugment_num_ops, augment.randaugment_magnitude) == (4, 7)
        assert (augment.random_erasing_p, augment.label_smoothing) == (0.25, 0.1)
        assert (config.eval.num_clips, augment.test_crops) == (1, 3)
    else:
        assert not config.model.options["temporal_in"] and config.model.options["scale"] == 0.5
        assert augment.random_erasing_p == 0 and augment.label_smoothing == 0 and not augment.randaugment
    if dataset == "diving48":
        assert (config.eval.num_clips, augment.test_crops) == (1, 1)


@pytest.mark.parametrize(("name", "total", "tunable"), [
    ("k400_vitb16_8x16", 96.8, 10.97), ("ssv2_vitb16_8f", 100.1, 14.34), ("k400_vitl14_8x16", 341.4, 38.26),
    ("k400_swinb_32x2", 95.9, 9.19),  # AIM Table 6: 9.2M tunable on Swin-B
])
def test_parameter_counts_match_the_paper(name: str, total: float, tunable: float) -> None:
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    with torch.device("meta"):
        image_model, _ = create_image_model(config.model, load_weights=False)
        video_model = build_video_model(config, image_model, num_classes=config.data.num_classes)
    all_params, trainable = adaptkit.count_parameters(video_model)
    assert round(all_params / 1e6, 1) == pytest.approx(total, abs=0.1)
    assert trainable / 1e6 == pytest.approx(tunable, abs=0.02)


def test_null_option_drops_it_so_strategies_can_be_switched() -> None:
    with pytest.raises(ConfigError, match="temporal_in"):
        load_config(None, ["model.strategy=linear-probe"])  # the demo's AIM options do not fit a linear probe
    config = load_config(None, ["model.strategy=linear-probe", "model.options.temporal_in=null",
                                "model.options.scale=null", "model.options.drop_path=null"])
    assert strategy_options(config.model) == {"head_dropout": 0.0}


def test_no_argument_default_is_the_embedded_benchmark_on_a_pretrained_backbone() -> None:
    config = load_config()
    assert config.data.source == "generated" and not config.model.allow_random_init
    assert config.model.pretrain is not None and config.model.checkpoint is None  # weights come from pretraining
    assert config.model.strategy == "aim" and config.data.num_frames >= 2
    assert config.data.augment.crop_size == config.data.generated.size


def test_generated_data_pretraining_and_controls_are_validated() -> None:
    with pytest.raises(ConfigError, match="data.generated.train_videos"):
        load_config(None, ["data.generated.train_videos=3"])
    with pytest.raises(ConfigError, match="data.augment.crop_size"):
        load_config(None, ["data.generated.size=48"])
    with pytest.raises(ConfigError, match="model.pretrain.steps"):
        load_config(None, ["model.pretrain.steps=0"])
    with pytest.raises(ConfigError, match="data.train_fraction"):
        load_config(None, ["data.train_fraction=0"])
    with pytest.raises(ConfigError, match=r"controls\[0\].strategy"):
        load_config(None, ["controls=[{strategy: nope}]"])
    with pytest.raises(ConfigError, match=r"controls\[0\].options"):
        load_config(None, ["controls=[{strategy: linear-probe, options: {ratio: 0.5}}]"])


def test_overrides_apply_with_types() -> None:
    config = load_config(CONFIG_DIR / "k400_vitb16_8x16.yaml", ["optim.lr=1e-4", "data.batch_size=4",
                                                                "model.options.ratio=0.5", "optim.betas=[0.8,0.9]"])
    assert config.optim.lr == 1e-4 and config.data.batch_size == 4
    assert config.model.options["ratio"] == 0.5 and config.optim.betas == (0.8, 0.9)


def test_a_mapping_override_merges_and_an_empty_one_empties() -> None:
    """Switching a config's timm model to open_clip must be able to drop the timm kwargs it carries."""
    timm_kwargs = load_config("synthetic_motion").model.kwargs
    assert timm_kwargs and "img_size" in timm_kwargs
    merged = load_config("synthetic_motion", ["model.kwargs={depth: 3}"]).model.kwargs
    assert merged == {**timm_kwargs, "depth": 3}
    switched = load_config("synthetic_motion", ["model.source=open_clip", "model.name=ViT-B-16", "model.kwargs={}",
                                                "model.kwargs.output_tokens=false"])
    assert switched.model.kwargs == {"output_tokens": False} and switched.model.source == "open_clip"
    with pytest.raises(ConfigError, match="model.kwargz"):
        load_config("synthetic_motion", ["model.kwargz={}"])


@pytest.mark.parametrize(("overrides", "named"), [
    (["optim.learning_rate=1e-4"], "optim.learning_rate"),
    (["bogus=1"], "bogus"),
    (["data.augment.flip=false"], "data.augment.flip"),
    (["data.batch_size=many"], "data.batch_size"),
    (["optim.lr"], "optim.lr"),
    (["model.options.ratios=0.5"], "ratios"),
    (["model.strategy=magic"], "model.strategy"),
    (["data.sampling=random"], "data.sampling"),
    (["data.test_convention=mmaction2"], "data.test_convention"),
    (["optim.lr=-1"], "optim.lr"),
    (["train.global_batch_size=60"], "train.global_batch_size"),
    (["data.augment.test_crops=2"], "test_crops"),
])
def test_invalid_overrides_name_the_key(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(CONFIG_DIR / "k400_vitb16_8x16.yaml", overrides)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epochz.*bad\.yaml"):
        load_config(path)


def test_missing_config_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


@pytest.mark.parametrize(("value", "temporal", "whole_blocks"), [
    ("temporal", True, False), ("true", False, True), ("false", False, False), ("none", False, False)])
def test_grad_checkpointing_modes_reach_the_model(value: str, temporal: bool, whole_blocks: bool) -> None:
    config = load_config(None, [f"model.grad_checkpointing={value}"])
    with torch.device("meta"):
        image_model, _ = create_image_model(config.model, load_weights=False)
        video_model = build_video_model(config, image_model, num_classes=config.data.num_classes or 4)
    blocks = list(video_model.family.blocks())
    assert video_model._grad_checkpointing is whole_blocks
    assert all(block.checkpoint_temporal is temporal for block in blocks)
    assert all(block.recompute_adapters is (value in ("temporal", "false")) for block in blocks)


def test_paths_are_made_absolute_against_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run folder records its config; absolute paths make that record usable from any folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config("synthetic_motion", [
        "data.source=video", "model.checkpoint=weights/image.safetensors", "data.train.annotations=k400/train.csv",
        "data.train.root=k400/videos", "data.val.annotations=~/k400/val.csv", "data.frame_cache=../frames",
        "data.generated.cache_dir=.cache/adaptkit", "train.output_dir=runs/mine",
    ])
    assert config.model.checkpoint == str(tmp_path / "weights" / "image.safetensors")
    assert (config.data.train.annotations, config.data.train.root) == (str(tmp_path / "k400" / "train.csv"),
                                                                       str(tmp_path / "k400" / "videos"))
    # Listed paths without a root are relative to the current folder: it becomes their root.
    assert (config.data.val.annotations, config.data.val.root) == (str(tmp_path / "home" / "k400" / "val.csv"),
                                                                   str(tmp_path))
    tree = load_config("synthetic_motion", ["data.source=video", "data.format=folder_tree",
                                            "data.train.annotations=videos/train"])
    assert (tree.data.train.annotations, tree.data.train.root) == (str(tmp_path / "videos" / "train"), None)
    assert config.data.frame_cache == str(tmp_path.parent / "frames")
    assert config.data.generated.cache_dir == str(tmp_path / ".cache" / "adaptkit")
    assert config.train.output_dir == "runs/mine"  # the run folder's own name stays as written


@pytest.mark.parametrize(("global_batch", "batch", "processes", "fix"), [
    (32, 32, 2, "set data.batch_size=16"),  # the synthetic demo under torchrun --nproc_per_node 2
    (6, 4, 1, "set data.batch_size=3"),
    (30, 8, 4, "make train.global_batch_size a multiple of the 4 processes"),
])
def test_a_global_batch_that_does_not_split_says_what_to_set(global_batch: int, batch: int, processes: int,
                                                             fix: str) -> None:
    assert batch_size_fix(global_batch, batch, processes) == fix
    if fix.startswith("set"):
        size = int(fix.rpartition("=")[2])
        assert global_batch % (size * processes) == 0 and size <= batch


def test_a_config_files_strategy_options_replace_the_schemas_default(tmp_path) -> None:
    """A linear-probe control run records `options: {head_dropout: 0.0}`; reading it back (evaluate, predict) must
    not bring back the default drop_path, which linear-probe refuses."""
    from recipes._config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  strategy: linear-probe\n  options: {}\n  kwargs: {}\n")
    config = load_config(path)
    assert config.model.options == {} and config.model.kwargs == {}
    path.write_text("model:\n  strategy: linear-probe\n  options: {head_dropout: 0.0}\n")
    assert load_config(path).model.options == {"head_dropout": 0.0}
    assert load_config(path, ["model.options={head_dropout: 0.5}"]).model.options == {"head_dropout": 0.5}


def test_the_schemas_default_drop_path_applies_only_to_strategies_that_have_it(tmp_path) -> None:
    """A config without model.options gets drop_path 0.2 (the paper's) for aim only: switching it to another strategy
    must not fail on an option the user never wrote; one the user does write is still checked."""
    from adaptkit.strategies import make_strategy

    path = tmp_path / "no_options.yaml"
    path.write_text("model:\n  strategy: aim\n")
    assert load_config(path).model.options == {"drop_path": 0.2}
    for strategy in ("lora", "st-adapter", "zero-i2v", "linear-probe", "space-only"):
        assert "drop_path" not in make_strategy(strategy, {}).options()
        assert load_config(path, [f"model.strategy={strategy}"]).model.options == {}
        assert load_config(path, [f"model.strategy={strategy}", "model.options.head_dropout=0.1"]).model.options == {
            "head_dropout": 0.1}
        for said in ("model.options.drop_path=0.1", "model.options={drop_path: 0.2}"):
            with pytest.raises(ConfigError, match=rf"unknown option\(s\) \['drop_path'\] for strategy '{strategy}'"):
                load_config(path, [f"model.strategy={strategy}", said])


def test_an_adapter_ratio_is_refused_with_the_range_it_takes() -> None:
    # 0 is refused (an adapter needs at least one hidden unit): the range said is (0, 1], not [0.0, 1.0].
    for strategy in ("aim", "st-adapter", "zero-i2v"):
        for ratio in ("0", "-0.5", "1.5"):
            overrides = [f"model.strategy={strategy}", "model.options={}", f"model.options.ratio={ratio}"]
            with pytest.raises(ConfigError) as error:
                load_config("synthetic_motion", overrides)
            assert str(error.value) == f"model.options: {strategy} option ratio={ratio} is out of range (0, 1]"
    assert load_config("synthetic_motion", ["model.options.ratio=1.0"]).model.options["ratio"] == 1.0
