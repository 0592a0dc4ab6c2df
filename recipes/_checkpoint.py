"""Run-folder checkpoints: the adapter (``save_pretrained`` format) plus the training state to resume from.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding

- ``adapter_config.json`` + ``adapter_model.safetensors``: the trainable tensors only (what ``from_pretrained`` reads),
- ``config.yaml``: the full recipe config, ``classes.json``: the class names, in label order,
- ``image_model.safetensors``: only for randomly initialised backbones, whose weights no tag can reproduce,
- ``training_state.pt``: optimizer, scheduler, step counters, every rank's RNG state and the videos skipped so far,
  written with ``torch.save`` and read with ``torch.load(weights_only=True)``, so loading never runs pickled code,
- ``digests.json``: the SHA-256 of each file above, written last and verified on load (safetensors has no checksum).

The folder is written under a temporary name (``.tmp_step_<N>``) and renamed into place when complete, so a run killed
mid-write never leaves a half checkpoint that ``--resume`` could pick up; leftovers of such a kill are removed when
the next run starts. ``<run>/final/`` has the same layout minus the training state.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

import adaptkit
from adaptkit import ArchitectureMismatchError, UnsupportedBackboneError, VideoModel
from adaptkit.backbones import find_family
from adaptkit.checkpoint import CONFIG_NAME, IMAGE_WEIGHTS_NAME, describe_differences, read_config
from adaptkit.strategies import make_strategy
from recipes._builders import RANDOM_INIT, SavedBackboneMismatchError, create_image_model
from recipes._config import ModelConfig, RecipeConfig, absolute_path, strategy_options
from recipes._files import CorruptFileError, atomic_write, atomic_write_text, verify_digests, write_digests

log = logging.getLogger("recipes")

STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
CLASSES_FILE = "classes.json"
IMAGE_WEIGHTS_FILE = IMAGE_WEIGHTS_NAME  # a random backbone here; a merged model's backbone in the library's folders
CHECKPOINT_PREFIX = "step_"
TMP_PREFIX = f".tmp_{CHECKPOINT_PREFIX}"
ASIDE_PREFIX = f".old_{CHECKPOINT_PREFIX}"  # a complete checkpoint set aside while its step is written again

# Config keys that change the trained tensors: a resume must not silently switch any of them.
MODEL_KEYS_IGNORED_ON_RESUME = {"model.compile", "model.grad_checkpointing"}


def _write_model_files(
    path: Path, model: VideoModel, config_yaml: str, classes: Sequence[str], image_weights: Path | None
) -> None:
    model.save_pretrained(path)
    atomic_write_text(path / CONFIG_FILE, config_yaml)
    atomic_write_text(path / CLASSES_FILE, json.dumps(list(classes), indent=1) + "\n")
    if image_weights is not None:
        shutil.copyfile(image_weights, path / IMAGE_WEIGHTS_FILE)


def save_model_dir(
    path: Path, model: VideoModel, config_yaml: str, classes: Sequence[str], image_weights: Path | None = None
) -> None:
    """Write everything needed to rebuild the trained model into ``path`` (created if needed), digests last."""
    _write_model_files(path, model, config_yaml, classes, image_weights)
    write_digests(path)


def check_model_dir(path: Path, config_given: bool) -> None:
    """Make sure ``path`` is a model folder ``evaluate`` / ``predict`` can load, and that its files are intact.

    A run's ``final/`` or ``checkpoints/step_<N>/`` carries its config; a plain ``save_pretrained`` folder does not,
    so the image model and the sampling must then come from ``--config``.

    Raises:
        FileNotFoundError / NotADirectoryError: saying what the folder is and what was expected.
        recipes._files.CorruptFileError: a file differs from its recorded digest (the file is named).
    """
    path = Path(path)
    expected = "a run's final/ or checkpoints/step_<N>/ folder, or a save_pretrained folder"
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path} does not exist (expected {expected})")
    if not path.is_dir():
        raise NotADirectoryError(f"--checkpoint {path} is a file, not a model folder (expected {expected})")
    if not (path / CONFIG_NAME).is_file():
        hint = ""
        if (path / "final").is_dir():
            hint = f"; it looks like a run folder: pass {path / 'final'}"
        elif (path / "checkpoints").is_dir():
            hint = "; it looks like an unfinished run folder: pass one of its checkpoints/step_<N>/"
        raise FileNotFoundError(f"--checkpoint {path} is not a model folder: it has no adapter_config.json "
                                f"(expected {expected}){hint}")
    if not (path / CONFIG_FILE).is_file() and not config_given:
        raise FileNotFoundError(
            f"--checkpoint {path} is a save_pretrained folder without a run config: name the image model and the "
            "sampling with --config <name or YAML> (e.g. --config k400_vitb16_8x16) and overrides"
        )
    verify_digests(path)


def load_model_dir(image_model: torch.nn.Module, path: Path, config_given: bool, weights: str) -> VideoModel:
    """``adaptkit.from_pretrained(image_model, path)`` (frozen, eval mode), where an image model that differs from the
    one the adapter was trained on is said in the command line's terms.

    Args:
        weights: where the image model's weights came from (``create_image_model``'s description).

    Raises:
        ValueError: the config describes another image model than the checkpoint records (the keys are named), or
            builds a randomly initialised one that the folder has no saved copy of (its outputs would be noise).
    """
    merged = bool(read_config(path).get("merged"))
    if weights == RANDOM_INIT and not merged:
        config = "--config" if config_given else f"its {CONFIG_FILE}"
        raise ValueError(f"--checkpoint {path} has no saved image model ({IMAGE_WEIGHTS_FILE}) and {config} builds a "
                         "randomly initialised one (model.allow_random_init), so every call would see other weights: "
                         "give the config the adapter was trained with (its pretrained tag or model.checkpoint)")
    try:
        return adaptkit.from_pretrained(image_model, path)
    except ArchitectureMismatchError as error:
        raise ValueError(_another_image_model(path, config_given, describe_differences(error.differences))) from None


def _another_image_model(path: Path, config_given: bool, differences: str) -> str:
    config = "--config" if config_given else f"its {CONFIG_FILE}"
    return (f"--checkpoint {path} was trained on another image model than {config} and the overrides describe "
            f"({differences}): give the config it was trained with")


def load_image_model(model: ModelConfig, path: Path, config_given: bool) -> tuple[torch.nn.Module, str]:
    """The image model for the adapter in model folder ``path``: ``create_image_model(model)``, with the folder's
    saved random backbone (:func:`image_weights_in`) loaded into it when it has one.

    Raises:
        ValueError: the config builds another architecture than the saved backbone's, in
            :func:`load_model_dir`'s terms (the differing keys of the recorded backbone named).
    """
    try:
        return create_image_model(model, weights_file=image_weights_in(path))
    except SavedBackboneMismatchError as error:
        saved = read_config(path).get("backbone") or {}
        try:
            found = find_family(error.image_model).identity()
        except UnsupportedBackboneError:
            found = {}
        differences = {key: (saved[key], found[key]) for key in saved.keys() & found.keys() if saved[key] != found[key]}
        if len(differences) > 1:
            differences.pop("tensors", None)  # the named keys explain it (as the library's own check says it)
        described = describe_differences(differences) if differences else str(error)
        raise ValueError(_another_image_model(path, config_given, described)) from None


STRATEGY_KEYS = ("model", "model.strategy", "model.options")
FROM_THE_FOLDER = "the strategy and its options come from the checkpoint folder ({}), not from the config; drop the " \
                  "override"


def options_in_force(strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``strategy`` built from ``options`` (defaults filled in), as JSON records it (tuples as
    lists), so that a config and an ``adapter_config.json`` compare equal when they build the same model.

    Raises:
        adaptkit.StrategyOptionError: an unknown strategy or option, or an invalid value.
    """
    return json.loads(json.dumps(make_strategy(strategy, options).options()))


def _strategy_override_keys(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """(key, value as written) of the overrides that set ``model``, ``model.strategy`` or ``model.options[.*]``."""
    pairs = [(key.strip(), value.strip()) for key, _, value in (item.partition("=") for item in overrides)]
    return [(key, value) for key, value in pairs if key in STRATEGY_KEYS or key.startswith("model.options.")]


def refuse_strategy_overrides(path: Path, overrides: Sequence[str]) -> None:
    """Refuse, before the config is loaded, ``model.strategy=<another>`` and ``model.options.<name>=<value>`` whose
    value differs from what the model folder's ``adapter_config.json`` records: ``evaluate`` / ``predict`` load the
    strategy and its options from there, so the override would change nothing, silently (or first fail the config's
    own checks against the trained strategy's other options). A null and whole mappings are compared once the
    config is loaded (:func:`refuse_option_overrides`); what the config file itself says is the folder's to decide.

    Raises:
        ValueError: naming the override, the checkpoint's value and where the strategy comes from.
    """
    saved = read_config(path)
    saved_options = json.loads(json.dumps(saved.get("options") or {}))
    for key, written in _strategy_override_keys(overrides):
        try:
            value = yaml.safe_load(written)
        except yaml.YAMLError:
            continue  # load_config says what is wrong with it
        if key == "model.strategy" and value != saved["strategy"]:
            raise ValueError(f"{key}={written} (the checkpoint's is {saved['strategy']}): "
                             + FROM_THE_FOLDER.format(path / CONFIG_NAME))
        name = key.split(".")[2] if key.startswith("model.options.") else None
        if name is not None and key == f"model.options.{name}" and value is not None:
            value = json.loads(json.dumps(value))
            if name not in saved_options:
                raise ValueError(f"{key}={written} (the checkpoint's strategy {saved['strategy']} has no option "
                                 f"{name}): " + FROM_THE_FOLDER.format(path / CONFIG_NAME))
            if value != saved_options[name]:
                raise ValueError(f"{key}={written} (the checkpoint's is {saved_options[name]!r}): "
                                 + FROM_THE_FOLDER.format(path / CONFIG_NAME))


def refuse_option_overrides(path: Path, config: RecipeConfig, overrides: Sequence[str]) -> None:
    """After :func:`refuse_strategy_overrides`: refuse the overridden options that, as built (defaults filled in,
    a null back to the default, a whole ``model.options`` mapping), differ from the model folder's.

    Only what is overridden is compared: ``model.options.scale=null`` that brings a config's option back to the
    default the checkpoint was trained with is fine, whatever the config file's other options say.

    Raises:
        ValueError: naming each differing option with the checkpoint's value and where the options come from.
    """
    keys = [key for key, _ in _strategy_override_keys(overrides)]
    if not keys:
        return
    saved = read_config(path)
    saved_options = json.loads(json.dumps(saved.get("options") or {}))
    strategy = config.model.strategy
    options = options_in_force(strategy, strategy_options(config.model))
    differing: list[str] = []
    for key in keys:
        if key in ("model", "model.strategy") and strategy != saved["strategy"]:
            differing.append(f"model.strategy={strategy} (the checkpoint's is {saved['strategy']})")
        if key in ("model", "model.options"):
            names = sorted(set(options) | set(saved_options))
        else:
            names = [key.split(".")[2]] if key.startswith("model.options.") else []
        differing += [f"model.options.{name}={options.get(name)!r} (the checkpoint's is {saved_options.get(name)!r})"
                      for name in names if options.get(name) != saved_options.get(name)]
    if differing:
        raise ValueError(f"{', '.join(dict.fromkeys(differing))}: " + FROM_THE_FOLDER.format(path / CONFIG_NAME))


def read_classes(path: Path) -> list[str] | None:
    """The class names saved with a model folder, None when it has none (a plain ``save_pretrained`` folder)."""
    file = Path(path) / CLASSES_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def image_weights_in(path: Path) -> Path | None:
    """The saved random backbone of a model folder, if it has one.

    A merged model's folder (``adapter_config.json`` says merged) also has an ``image_model.safetensors``: the
    library's merged backbone, without the image head, which ``from_pretrained`` loads itself; it is not a
    backbone to build the image model from.
    """
    file = Path(path) / IMAGE_WEIGHTS_FILE
    return file if file.is_file() and not read_config(path).get("merged") else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: VideoModel,
    state: dict[str, Any],
    config_yaml: str,
    classes: Sequence[str],
    image_weights: Path | None,
    keep: int,
) -> Path:
    """Write ``<run>/checkpoints/step_<step>`` atomically and delete all but the newest ``keep`` checkpoints."""
    folder = run_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = folder / f"{TMP_PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    _write_model_files(tmp, model, config_yaml, classes, image_weights)
    atomic_write(tmp / STATE_FILE, lambda file: torch.save(state, file))
    write_digests(tmp)
    # A checkpoint of this step already there (a resumed run saving its step again) is set aside, not deleted,
    # until the new one is in place: a kill in between leaves it, restored by remove_unfinished_checkpoints.
    aside = folder / f"{ASIDE_PREFIX}{step:08d}"
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("_", 1)[1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first; for a step whose ``step_<N>`` a kill left missing, the copy set
    aside while it was written again (``.old_step_<N>``)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = {}
    for prefix in (ASIDE_PREFIX, CHECKPOINT_PREFIX):  # step_<N> wins over its set-aside copy
        for path in folder.glob(f"{prefix}*"):
            if path.name[len(prefix):].isdigit() and (path / STATE_FILE).is_file():
                found[_step_of(path)] = path
    return [found[step] for step in sorted(found)]


def remove_unfinished_checkpoints(run_dir: Path) -> list[Path]:
    """Delete the ``.tmp_step_*`` folders a kill during a checkpoint write left behind, and put back a checkpoint
    set aside (``.old_step_<N>``) whose ``step_<N>`` is missing (deleted when it is there); returns the removed."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    for aside in sorted(folder.glob(f"{ASIDE_PREFIX}*")):
        final = folder / f"{CHECKPOINT_PREFIX}{aside.name[len(ASIDE_PREFIX):]}"
        if not (final / STATE_FILE).is_file():
            shutil.rmtree(final, ignore_errors=True)
            os.replace(aside, final)
    leftovers = sorted(folder.glob(f"{TMP_PREFIX}*")) + sorted(folder.glob(f"{ASIDE_PREFIX}*"))
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The training state of a checkpoint; ``weights_only=True`` refuses anything but tensors and plain data.

    Raises:
        CorruptFileError: the file holds something else (e.g. pickled code), in one line naming the file; torch's
            own message would advise loading it with ``weights_only=False``, which runs that code.
    """
    path = Path(checkpoint) / STATE_FILE
    try:
        with warnings.catch_warnings():  # torch's multi-line note on a foreign pickle protocol: the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CorruptFileError(f"{path} is not a training state of tensors and plain data (it holds objects torch "
                               "does not load safely); it was not loaded, as loading it could run code") from None


def load_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """Verify every file of ``checkpoint`` against its digest, then load its training state.

    Raises:
        CorruptFileError: naming the file that is missing, corrupt or unreadable.
    """
    verify_digests(checkpoint, required=True)
    try:
        return load_state(checkpoint)
    except CorruptFileError:
        raise  # load_state's own message names the file
    except Exception as error:  # noqa: BLE001 - any unreadable state makes the checkpoint unusable
        raise CorruptFileError(f"{Path(checkpoint) / STATE_FILE} is unreadable: {error}") from None


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose files all match their digests, with its training state; None if none.

    A broken newer checkpoint (a flipped bit, a truncated file) is skipped with a warning naming the file.

    Raises:
        CorruptFileError: every checkpoint of the run is broken (each is named).
    """
    problems = []
    for checkpoint in reversed(list_checkpoints(run_dir)):
        try:
            return checkpoint, load_checkpoint(checkpoint)
        except CorruptFileError as error:
            log.warning("cannot resume from %s: %s; trying an older checkpoint", checkpoint.name, error)
            problems.append(str(error))
    if problems:
        raise CorruptFileError(f"every checkpoint in {Path(run_dir) / 'checkpoints'} is broken: " + "; ".join(problems))
    return None


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}"))
    return flat


def model_config_differences(saved_yaml: str, config: RecipeConfig) -> list[str]:
    """``key: checkpoint X, this config Y`` for every ``model.*`` key (and ``data.num_frames``) that differs; the
    strategy options compared as built (:func:`options_in_force`), not as written."""
    saved = OmegaConf.to_container(OmegaConf.create(saved_yaml))
    current = OmegaConf.to_container(OmegaConf.structured(config))
    if not isinstance(saved, dict):  # its digest matched, so written so by hand
        raise ValueError(f"the checkpoint's {CONFIG_FILE} holds a YAML {type(saved).__name__}, not a recipe config")
    if not isinstance(current, dict):
        raise TypeError(f"a recipe config converts to a mapping, got {type(current).__name__}")

    def relevant(tree: dict[str, Any]) -> dict[str, Any]:
        model = tree.get("model", {})
        flat = _flatten({key: value for key, value in model.items() if key != "options"}, "model")
        # The options as built, defaults filled in: ratio=0.25 written out or left to aim's default is one model.
        options = {key: value for key, value in (model.get("options") or {}).items() if value is not None}
        try:
            options = options_in_force(model.get("strategy"), options)
        except (TypeError, ValueError):  # e.g. a strategy of a module not imported now: compared as written
            pass
        flat.update(_flatten(options, "model.options"))
        if flat.get("model.checkpoint"):  # runs recorded before paths were stored absolute
            flat["model.checkpoint"] = absolute_path(flat["model.checkpoint"])
        flat["data.num_frames"] = tree.get("data", {}).get("num_frames")
        return {k: v for k, v in flat.items() if k not in MODEL_KEYS_IGNORED_ON_RESUME}

    old, new = relevant(saved), relevant(current)
    return [f"{key}: checkpoint {old.get(key)!r}, this config {new.get(key)!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


SETTINGS_FREE_ON_RESUME = {"train.resume", "train.overwrite", "train.stop_at_step", "train.device",
                           "train.output_dir", "train.num_threads", "train.log_every", "train.keep_checkpoints",
                           "train.dist_timeout_min",
                           "data.num_workers", "data.generated.cache_dir", "eval.num_workers", "eval.batch_size",
                           "eval.chunk_size"}
"""Keys a resumed run may change without changing what it trains: how it runs, where it is (the output folder,
given absolute or relative), where generated data is cached (keyed by its settings), not what it computes."""


def setting_differences(saved_yaml: str, config: RecipeConfig) -> list[str]:
    """``key: checkpoint X, this config Y`` for the other keys (not ``model.*``, compared by
    :func:`model_config_differences`, nor :data:`SETTINGS_FREE_ON_RESUME`) that differ."""
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(saved_yaml)), "")
    # Through JSON: the structured config holds tuples where the YAML read back holds lists.
    current = _flatten(json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(config)))), "")
    skip = {f".{key}" for key in SETTINGS_FREE_ON_RESUME | {"data.num_frames"}}
    keys = sorted(key for key in set(saved) | set(current)
                  if not key.startswith(".model.") and key not in skip and saved.get(key) != current.get(key))
    return [f"{key[1:]}: checkpoint {saved.get(key)!r}, this config {current.get(key)!r}" for key in keys]


# ----------------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / Python RNG states as tensors and plain data (weights_only-safe).

    CUDA: the state of this process's own device only (``cuda``: a one-element list; empty without CUDA), not of
    every visible GPU, which belong to the other processes of the node.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(torch.cuda.current_device())] if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`, on this process's own CUDA device. (Checkpoints written before held every
    visible device's state: the one of this process's device is taken.)"""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        device = torch.cuda.current_device()
        saved = state["cuda"]
        torch.cuda.set_rng_state(saved[0] if len(saved) == 1 else saved[min(device, len(saved) - 1)], device)
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
