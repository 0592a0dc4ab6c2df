"""The recipes' typed config schema, YAML loading with ``key=value`` overrides, and validation.

A config is a YAML file merged onto the :class:`RecipeConfig` dataclasses (``OmegaConf.structured``), then
command-line overrides in OmegaConf dotlist form (``optim.lr=1e-4 data.batch_size=4``). A key the schema does not
know, or a value of the wrong type, is an error that names the key. Defaults below are the paper's common settings;
each YAML file in ``recipes/configs/`` spells out everything that differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from adaptkit import list_strategies
from adaptkit.data import DENSE_TEST_CONVENTIONS, AugmentConfig, list_annotation_formats
from adaptkit.strategies import make_strategy

CONFIG_DIR = Path(__file__).parent / "configs"  # the shipped configs (installed with the package)
DEFAULT_CONFIG = "embedded_actions"  # the config `adaptkit train` runs with no --config: a name in CONFIG_DIR


class ConfigError(ValueError):
    """An invalid config: unknown key, wrong type or out-of-range value. The message names the key."""


@dataclass
class PretrainConfig:
    """``model.pretrain``: image pretraining on generated stills (shape x colour x place; recipes._pretrain)."""

    steps: int = 1200  # optimizer steps; fresh images every step
    position_grid: int = 3  # the label also names the g x g grid cell of the shape (36 g^2 classes); 1 = shape x colour
    batch_size: int = 64
    lr: float = 1e-3  # AdamW peak lr: 5% linear warmup, then cosine to 0
    weight_decay: float = 0.05
    test_images: int = 2000  # held-out images for the reported accuracy
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "vit_base_patch16_clip_224.openai"  # timm name (pretrained tag after the dot) or open_clip name
    source: str = "timm"  # "timm" or "open_clip"
    pretrained: str | None = None  # pretrained tag (open_clip's, or timm's when not in the name); None = none
    checkpoint: str | None = None  # local image-model weights (.safetensors / .pt / .pth), loaded weights_only
    allow_random_init: bool = False  # permit a frozen RANDOM backbone (only sensible for demos and tests)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments of timm / open_clip create_model
    strategy: str = "aim"  # a name from adaptkit.list_strategies() (yours too, through `imports`)
    # Strategy options. A config file's mapping replaces this default; command-line overrides merge into it, and an
    # option set to null is dropped (back to the strategy's default), e.g. model.strategy=linear-probe
    # model.options.temporal_in=null when switching strategy. This default drop_path (the paper's stochastic depth)
    # applies only to strategies that have the option: a config without options runs model.strategy=lora too.
    options: dict[str, Any] = field(default_factory=lambda: {"drop_path": 0.2})
    # Pretrain the image model first on generated still images (recipes._pretrain) and use the result as
    # model.checkpoint; only when model.checkpoint is unset. The embedded stand-in for ImageNet / CLIP weights.
    pretrain: PretrainConfig | None = None
    # Activation recomputation in the backward pass (VideoModel.set_grad_checkpointing): false (the default: only
    # cheap parts, same results), "temporal" (also the temporal branches), true (every block: least memory, one more
    # forward pass), "none" (nothing: most memory).
    grad_checkpointing: bool | str = False
    compile: bool = False  # torch.compile the model


@dataclass
class SplitConfig:
    annotations: str | None = None  # annotation file (the dataset folder for the folder_tree format)
    root: str | None = None  # folder joined in front of every video path


@dataclass
class SyntheticConfig:
    train_videos: int = 4096  # distinct generated training clips
    val_videos: int = 256  # distinct generated validation clips (another seed)
    size: int = 32  # frame side; must match the model's input size
    num_classes: int = 4  # motion directions (even)
    seed: int = 0  # training videos use seed, validation videos seed + 1


@dataclass
class GeneratedConfig:
    """``data.source: generated``: action videos with time-reversed class pairs (:mod:`adaptkit.data.actions`),
    written once as real files under ``cache_dir`` (keyed by these settings) and then read like any dataset."""

    train_videos: int = 1600  # even: videos come in reversed pairs
    val_videos: int = 400  # even; rendered from seed + 1
    size: int = 32  # frame side in pixels
    seed: int = 0
    min_seconds: float = 2.0  # video lengths: 2-6 s at 12-30 fps
    max_seconds: float = 6.0
    cache_dir: str = ".cache/adaptkit"  # generated videos and pretrained embedded backbones
    frame_cache: bool = True  # decode the videos once into a frame cache next to them (data.frame_cache) and train on it


@dataclass
class DataConfig:
    source: str = "video"  # "video" (annotation files + video files), "generated" (GeneratedConfig) or "synthetic"
    format: str = "video_list"  # annotation format: video_list, kinetics_csv, ssv2_json, diving48_json, folder_tree
    options: dict[str, Any] = field(default_factory=dict)  # format-specific parser options (e.g. class_folders)
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    num_classes: int | None = None  # expected class count, checked against the annotations (None = any)
    num_frames: int = 8  # frames per clip T (the model is built for T)
    sampling: str = "dense"  # "dense" (Kinetics: clip_len x frame_interval) or "segment" (SSv2, Diving-48)
    frame_interval: int = 16  # dense sampling step between frames (ignored by segment sampling)
    # dense test-view layout: "mmaction2-0.x" (the AIM authors' code, used by the paper configs) or "mmaction2-1.x"
    test_convention: str = "mmaction2-1.x"
    batch_size: int = 8  # clips per device per forward pass
    num_workers: int = 4  # DataLoader workers per device
    decode_backend: str | None = None  # "pyav" or "torchcodec"; None = PyAV (faster on CPU, measured)
    # "cuda": decode with NVDEC (torchcodec) and augment on the GPU, in the main process (num_workers=0)
    decode_device: str = "cpu"
    frame_cache: str | None = None  # folder built by `adaptkit cache`: read pre-decoded frames instead of videos
    train_fraction: float = 1.0  # train on this share of the training videos (a fixed random subset; Figure 3)
    # Refuse a split whose listed videos are missing from disk (or from data.frame_cache) above this share (0.1:
    # copies of Kinetics miss 1-5% as YouTube videos disappear, a wrong root or a half-copied dataset misses far
    # more); 1 trains on what exists.
    max_missing_fraction: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # see adaptkit.data.AugmentConfig
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    generated: GeneratedConfig = field(default_factory=GeneratedConfig)


@dataclass
class OptimConfig:
    lr: float = 3e-4  # peak learning rate of the head (and of everything when backbone_lr_mult = 1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.05
    # Which trainable tensors skip weight decay: "timm" (1-D tensors, temporal embeddings, position tables) or
    # "none" (every trainable tensor decays, as the AIM authors' code does: the paper configs use it).
    no_decay: str = "timm"
    backbone_lr_mult: float = 1.0  # lr factor of trainable tensors inside the backbone (0.1 for ViT-L)
    temporal_embed_lr_mult: float = 1.0  # lr factor of the (zero-initialised) temporal embedding, if the strategy has one
    warmup_epochs: float = 2.5  # linear warmup, then cosine to min_lr; both per iteration
    min_lr: float = 0.0
    clip_grad_norm: float | None = None  # the reference does not clip
    fused: bool | None = None  # fused AdamW kernel; None = on CUDA only


@dataclass
class TrainConfig:
    epochs: int = 30
    max_steps: int | None = None  # optimizer steps in total (overrides epochs for the schedule length)
    global_batch_size: int = 64  # clips per optimizer step, over all devices, via gradient accumulation
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16" or "fp32"
    device: str = "auto"  # "auto" (CUDA when available), "cuda" or "cpu"
    seed: int = 0
    output_dir: str | None = None  # run folder; None = runs/<name>
    resume: bool = False  # continue from the last checkpoint in the run folder
    overwrite: bool = False  # start afresh even if the run folder holds checkpoints (deletes them)
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = at the end of every epoch
    keep_checkpoints: int = 2  # newest checkpoints kept in <run>/checkpoints
    log_every: int = 20  # optimizer steps between metric log lines
    stop_at_step: int | None = None  # stop after this step with a checkpoint, as if interrupted (resume later)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    dist_timeout_min: float = 30.0  # how long a collective waits for a missing process (torchrun) before failing


@dataclass
class EvalConfig:
    num_clips: int = 3  # temporal views per video (spatial views: data.augment.test_crops)
    batch_size: int = 4  # videos per evaluation batch
    chunk_size: int = 8  # views per forward pass (bounds memory)
    num_workers: int | None = None  # None = data.num_workers
    every_epochs: int = 0  # evaluate every N epochs during training; 0 = only at the end
    at_end: bool = True  # evaluate the final model at the end of training


@dataclass
class ControlConfig:
    """A control run: the same config with another strategy, trained and evaluated the same way after the main run
    (e.g. the frozen linear probe beside AIM)."""

    strategy: str = "linear-probe"
    options: dict[str, Any] = field(default_factory=dict)  # replaces model.options for this run


@dataclass
class RecipeConfig:
    name: str = "run"  # run name; the run folder is runs/<name> unless train.output_dir says otherwise
    # Python modules imported before the config is checked: a strategy or backbone family of your own registers there
    # (installed, a .py file in the folder the command runs in, or a .py file's path). Runs record a local file by its
    # absolute path, so evaluate / predict import it too, from any folder.
    imports: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    controls: list[ControlConfig] = field(default_factory=list)  # run after the main run, in runs/<name>/controls/

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir or Path("runs") / self.name)


def _merge(base: DictConfig, update: Any, source: str, key: str | None = None) -> DictConfig:
    """``base`` updated by ``update``; ``key`` names the key being set when OmegaConf's error does not (a whole
    section replaced by a value, e.g. ``optim=5``)."""
    try:
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except ConfigKeyError as error:
        raise ConfigError(f"unknown config key {error.full_key or key!r} in {source}") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or key
        reason = str(error).splitlines()[0]
        where = f"for config key {key!r} in {source}" if key else f"in {source}"
        raise ConfigError(f"invalid value {where}: {reason}") from None


def list_configs() -> list[str]:
    """Names of the shipped configs (``adaptkit ls``), sorted."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(name_or_path: str | Path | None) -> Path:
    """The YAML file for a shipped config name (``k400_vitb16_8x16``) or a path; None is :data:`DEFAULT_CONFIG`.

    An existing file wins over a shipped name, so a local copy made with ``adaptkit cp`` can be edited in place.

    Raises:
        FileNotFoundError: neither a file nor a shipped name (the message lists the closest names).
    """
    name = str(DEFAULT_CONFIG if name_or_path is None else name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    if path.is_dir():
        raise FileNotFoundError(f"config {name} is a folder, not a YAML file")
    close = difflib.get_close_matches(path.stem, list_configs(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise FileNotFoundError(f"no config file {path.resolve()} and no shipped config named {name!r} (`adaptkit ls` "
                            f"lists them){hint}")


def batch_size_fix(global_batch_size: int, batch_size: int, processes: int) -> str:
    """What to set when ``global_batch_size`` is not whole per-process batches of ``batch_size``: the largest
    per-process batch up to ``batch_size`` that divides it, or a global batch the processes can share."""
    per_process, remainder = divmod(global_batch_size, processes)
    fits = [b for b in range(min(batch_size, per_process), 0, -1) if per_process % b == 0]
    if remainder or not fits:
        return f"make train.global_batch_size a multiple of the {processes} processes"
    return f"set data.batch_size={fits[0]}"


def _glued_keys(value: Any) -> list[str]:
    """Mapping keys with a colon inside and no value (``a:1`` where ``a: 1`` was meant), at any depth."""
    if isinstance(value, dict):
        return [k for k, v in value.items() if isinstance(k, str) and ":" in k and v is None] + [
            key for v in value.values() for key in _glued_keys(v)]
    if isinstance(value, list):
        return [key for v in value for key in _glued_keys(v)]
    return []


FILE_REPLACES = ("model.options", "model.kwargs", "data.options")
"""Open mappings that a config file replaces rather than merges into the schema's defaults. A run's recorded
``config.yaml`` of a linear probe says ``options: {head_dropout: 0.0}``: merged, the default ``drop_path`` came back
and ``evaluate`` refused the run. Command-line overrides still merge into them."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RecipeConfig:
    """Load a YAML config onto the schema, apply ``key=value`` overrides, convert and validate.

    Args:
        path: a shipped config's name or a YAML file (see :func:`resolve_config`); None loads
            :data:`DEFAULT_CONFIG`.
        overrides: OmegaConf dotlist, e.g. ``["optim.lr=1e-4", "data.batch_size=4"]``. A mapping given as a value
            is merged into the config's (``model.kwargs={depth: 2}`` keeps the other kwargs); ``key={}`` empties it.

    Raises:
        ConfigError: unknown key (named), wrong type or invalid value.
        FileNotFoundError: no such config.
    """
    path = resolve_config(path)
    config = OmegaConf.structured(RecipeConfig)
    loaded = OmegaConf.load(path)
    config = _merge(config, loaded, str(path))
    for key in FILE_REPLACES:  # a file's strategy options are the run's options, not additions to the defaults
        value = OmegaConf.select(loaded, key, default=None)
        if isinstance(value, DictConfig):
            OmegaConf.update(config, key, value, merge=False)
    # The schema's default options still in place (the file has no model.options), until an override names them.
    unsaid = set() if isinstance(OmegaConf.select(loaded, "model.options", default=None), DictConfig) else set(
        ModelConfig().options)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    for item in overrides or []:  # one at a time, so that an error names its override; later ones win
        key, _, value = item.partition("=")
        try:
            parsed = OmegaConf.from_dotlist([item])
        except yaml.YAMLError as error:  # e.g. {depths:[2,2]}: YAML flow mappings need a space after the colon
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); e.g. write "
                              "key={a: 1, b: [2, 3]} with a space after each colon, and quote the whole override "
                              "in the shell") from None
        glued = _glued_keys(OmegaConf.to_container(parsed))
        if glued:  # {depth:2} is valid YAML: the key "depth:2" with no value
            raise ConfigError(f"override {item!r}: {glued[0]!r} is a key without a value; write a mapping with a "
                              "space after each colon, e.g. {depth: 2}")
        config = _merge(config, parsed, "the command-line overrides", key)
        said = OmegaConf.select(parsed, "model.options", default=None)
        unsaid -= set(said) if isinstance(said, DictConfig) else set()
        if value.strip() == "{}":  # merging an empty mapping would change nothing: it empties one (model.kwargs={})
            OmegaConf.update(config, key, {}, merge=False)
    return to_config(config, unsaid)


def to_config(config: DictConfig, default_options: set[str] | frozenset[str] = frozenset()) -> RecipeConfig:
    """Convert a merged DictConfig to the dataclasses, import its ``imports`` and validate it.

    Args:
        default_options: the ``model.options`` keys that are the schema's defaults, not the user's: each is left out
            for a strategy that has no such option (``drop_path``: aim's stochastic depth; lora has none).
    """
    try:
        recipe = OmegaConf.to_object(config)
    except ValueError as error:  # a dataclass's own __post_init__ check, e.g. AugmentConfig's
        raise ConfigError(f"invalid {_section_of(error)}: {error}") from None
    if not isinstance(recipe, RecipeConfig):
        raise TypeError(f"the config schema converted to {type(recipe).__name__}, not RecipeConfig")
    recipe.imports = import_plugins(recipe.imports)
    for name in default_options:
        if name in recipe.model.options and not _takes_option(recipe.model.strategy, name):
            del recipe.model.options[name]
    validate(recipe)
    absolute_paths(recipe)
    return recipe


def _takes_option(strategy: str, name: str) -> bool:
    """Whether ``strategy`` has option ``name`` (True for a strategy that cannot be built here: validate says why)."""
    try:
        return name in make_strategy(strategy, {}).options()
    except (TypeError, ValueError):
        return True


_SECTIONS = {AugmentConfig: "data.augment"}  # schema dataclasses with a __post_init__ check of their own


def _section_of(error: BaseException) -> str:
    """The config section whose dataclass raised ``error`` in its ``__post_init__`` (from the traceback)."""
    frame = error.__traceback__
    section = "config value"
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        if dataclasses.is_dataclass(owner):
            section = _SECTIONS.get(type(owner), type(owner).__name__)
        frame = frame.tb_next
    return section


def absolute_path(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against the current folder (symlinks kept)."""
    return os.path.abspath(os.path.expanduser(path))


def absolute_paths(config: RecipeConfig) -> None:
    """Make the config's file and folder paths absolute, in place, so that the config a run folder records works from
    any folder: relative paths mean the folder the command runs in, as on the command line. A split without a
    ``root`` (other than a folder_tree, whose root defaults to its own folder) gets that folder as its root, which
    leaves absolute listed paths as they are. ``train.output_dir`` (the run folder itself) is left as written."""
    data = config.data
    if config.model.checkpoint is not None:
        config.model.checkpoint = absolute_path(config.model.checkpoint)
    for split in (data.train, data.val):
        split.annotations = None if split.annotations is None else absolute_path(split.annotations)
        split.root = None if split.root is None else absolute_path(split.root)
        if split.annotations is not None and split.root is None and data.format != "folder_tree":
            split.root = os.getcwd()  # without a root, listed paths are relative to the folder the command runs in
    if data.frame_cache is not None:
        data.frame_cache = absolute_path(data.frame_cache)
    data.generated.cache_dir = absolute_path(data.generated.cache_dir)


def to_yaml(config: RecipeConfig) -> str:
    """The full, resolved config as YAML (what a run folder records)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def strategy_options(model: ModelConfig) -> dict[str, Any]:
    """``model.options`` without the null entries (those fall back to the strategy's defaults)."""
    return {key: value for key, value in model.options.items() if value is not None}


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: Any, key: str, choices: list[Any]) -> None:
    _require(value in choices, key, f"{value!r} is not one of {choices}")


def import_plugins(entries: list[str]) -> list[str]:
    """Import each module (registering the strategies and families it defines); returns the entries as a run records
    them, so that ``evaluate`` / ``predict`` find the modules from any folder.

    An entry is a module name, found as ``python -m`` would find it (the folder the command runs in first, as it is
    not for an installed console script), or a ``.py`` file. A module name that is a ``.py`` file in that folder is
    recorded as the file's absolute path; an installed module, by its name.

    Raises:
        ConfigError: an entry that cannot be imported, naming it and why.
    """
    recorded = []
    for entry in entries:
        try:
            if entry.endswith(".py"):
                path = Path(entry).expanduser().resolve()
                _import_file(path)
                recorded.append(str(path))
                continue
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            file = Path(getattr(importlib.import_module(entry), "__file__", None) or "")
            local = "." not in entry and file.name == f"{entry}.py" and file.resolve().parent == Path.cwd().resolve()
            recorded.append(str(file.resolve()) if local else entry)
        except Exception as error:  # noqa: BLE001 - any failure of the user's module is this config's error
            raise ConfigError(f"imports: cannot import {entry!r} ({type(error).__name__}: {error}); give an installed "
                              "module, a .py file in the folder the command runs in, or a .py file's path") from None
    return recorded


def _import_file(path: Path) -> None:
    """Import the module in ``path`` under its file name, once per process."""
    module = sys.modules.get(path.stem)
    if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == path:
        return
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"no Python file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise


def validate(config: RecipeConfig) -> None:
    """Check values the type system cannot: choices, ranges and combinations. Raises ConfigError."""
    model, data, optim, train, evaluation = config.model, config.data, config.optim, config.train, config.eval
    _one_of(model.source, "model.source", ["timm", "open_clip"])
    _one_of(model.strategy, "model.strategy", list_strategies())
    _one_of(model.grad_checkpointing, "model.grad_checkpointing", [False, True, "temporal", "none"])
    try:
        make_strategy(model.strategy, strategy_options(model))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.options: {error}") from None
    if model.checkpoint is not None:
        suffix = Path(model.checkpoint).suffix
        _one_of(suffix, "model.checkpoint (file extension)", [".safetensors", ".pt", ".pth", ".bin"])

    _one_of(data.source, "data.source", ["video", "generated", "synthetic"])
    _require(0 < data.train_fraction <= 1, "data.train_fraction", f"must be in (0, 1], got {data.train_fraction}")
    _require(0 <= data.max_missing_fraction <= 1, "data.max_missing_fraction",
             f"must be in [0, 1], got {data.max_missing_fraction}")
    generated = data.generated
    if data.source == "generated":
        for key in ("train_videos", "val_videos"):
            value = getattr(generated, key)
            _require(value >= 2 and value % 2 == 0, f"data.generated.{key}",
                     f"must be even and >= 2 (videos come in time-reversed pairs), got {value}")
        _require(generated.size >= 16 and generated.size % 2 == 0, "data.generated.size",
                 f"must be even and >= 16, got {generated.size}")
        _require(0 < generated.min_seconds <= generated.max_seconds, "data.generated",
                 "need 0 < min_seconds <= max_seconds")
        _require(data.augment.crop_size == generated.size, "data.augment.crop_size",
                 f"must equal data.generated.size={generated.size} (the model input)")
    if model.pretrain is not None:
        for key in ("steps", "batch_size", "test_images"):
            _require(getattr(model.pretrain, key) >= 1, f"model.pretrain.{key}", "must be >= 1")
        _require(model.pretrain.lr > 0, "model.pretrain.lr", f"must be > 0, got {model.pretrain.lr}")
        _require(model.source == "timm", "model.pretrain", "image pretraining builds timm models only")
    for index, control in enumerate(config.controls):
        _one_of(control.strategy, f"controls[{index}].strategy", list_strategies())
        try:
            make_strategy(control.strategy, {k: v for k, v in control.options.items() if v is not None})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"controls[{index}].options: {error}") from None
    _one_of(data.sampling, "data.sampling", ["dense", "segment"])
    _one_of(data.test_convention, "data.test_convention", list(DENSE_TEST_CONVENTIONS))
    if data.source == "video":
        _one_of(data.format, "data.format", list_annotation_formats())
    if data.decode_backend is not None:
        _one_of(data.decode_backend, "data.decode_backend", ["pyav", "torchcodec"])
    for key in ("num_frames", "frame_interval", "batch_size"):
        _require(getattr(data, key) >= 1, f"data.{key}", f"must be >= 1, got {getattr(data, key)}")
    _require(data.num_workers >= 0, "data.num_workers", f"must be >= 0, got {data.num_workers}")
    _one_of(data.decode_device, "data.decode_device", ["cpu", "cuda"])
    if data.decode_device == "cuda":
        _require(data.num_workers == 0 and config.eval.num_workers in (None, 0), "data.num_workers",
                 f"must be 0 with data.decode_device=cuda (CUDA decoding runs in the main process), got "
                 f"{data.num_workers}")
        _require(data.decode_backend in (None, "torchcodec"), "data.decode_backend",
                 "must be torchcodec (or null) with data.decode_device=cuda: PyAV decodes on the CPU only")
    _require(data.num_classes is None or data.num_classes >= 1, "data.num_classes", "must be >= 1")
    synthetic = data.synthetic
    if data.source == "synthetic":
        _require(data.num_frames >= 2, "data.num_frames", "synthetic motion needs >= 2 frames")
        _require(synthetic.size >= 16, "data.synthetic.size", f"must be >= 16, got {synthetic.size}")
        _require(synthetic.num_classes >= 2 and synthetic.num_classes % 2 == 0, "data.synthetic.num_classes",
                 f"must be even and >= 2 (each direction needs its opposite), got {synthetic.num_classes}")
        _require(synthetic.train_videos >= 1 and synthetic.val_videos >= 1, "data.synthetic",
                 "train_videos and val_videos must be >= 1")
        _require(data.augment.crop_size == synthetic.size, "data.augment.crop_size",
                 f"must equal data.synthetic.size={synthetic.size} (the model input; predict crops real videos to it)")
        for name in ("train", "val"):  # generated in memory: a file named here would be silently ignored
            for key in ("annotations", "root"):
                _require(getattr(getattr(data, name), key) is None, f"data.{name}.{key}",
                         "is not read with data.source=synthetic (clips made in memory); set data.source=video to "
                         "use annotation files")

    _require(optim.lr > 0 and math.isfinite(optim.lr), "optim.lr", f"must be > 0, got {optim.lr}")
    _require(all(0 <= b < 1 for b in optim.betas), "optim.betas", f"must be in [0, 1), got {optim.betas}")
    _require(optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _require(optim.no_decay in ("timm", "none"), "optim.no_decay", f"must be timm or none, got {optim.no_decay!r}")
    _require(optim.backbone_lr_mult >= 0, "optim.backbone_lr_mult", "must be >= 0")
    _require(optim.temporal_embed_lr_mult >= 0, "optim.temporal_embed_lr_mult", "must be >= 0")
    _require(optim.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    _require(0 <= optim.min_lr <= optim.lr, "optim.min_lr", "must be in [0, optim.lr]")
    _require(optim.clip_grad_norm is None or optim.clip_grad_norm > 0, "optim.clip_grad_norm", "must be > 0")

    _require(train.epochs >= 1, "train.epochs", f"must be >= 1, got {train.epochs}")
    _require(train.max_steps is None or train.max_steps >= 1, "train.max_steps", "must be >= 1")
    _require(train.global_batch_size % data.batch_size == 0, "train.global_batch_size",
             f"{train.global_batch_size} is not a multiple of data.batch_size={data.batch_size}: "
             f"{batch_size_fix(train.global_batch_size, data.batch_size, 1)}")
    _one_of(train.precision, "train.precision", ["auto", "bf16", "fp32"])
    _one_of(train.device, "train.device", ["auto", "cuda", "cpu"])
    _require(train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0")
    _require(train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
    _require(train.log_every >= 1, "train.log_every", "must be >= 1")
    _require(train.stop_at_step is None or train.stop_at_step >= 1, "train.stop_at_step", "must be >= 1")
    _require(train.num_threads is None or train.num_threads >= 1, "train.num_threads", "must be >= 1")
    _require(math.isfinite(train.dist_timeout_min) and train.dist_timeout_min > 0, "train.dist_timeout_min",
             f"must be > 0 minutes, got {train.dist_timeout_min}")

    for key in ("num_clips", "batch_size", "chunk_size"):
        _require(getattr(evaluation, key) >= 1, f"eval.{key}", f"must be >= 1, got {getattr(evaluation, key)}")
    _require(evaluation.every_epochs >= 0, "eval.every_epochs", "must be >= 0")
    _require(evaluation.num_workers is None or evaluation.num_workers >= 0, "eval.num_workers", "must be >= 0")
