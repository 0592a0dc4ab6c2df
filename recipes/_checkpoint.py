"""Run-folder checkpoints: the adapter (``save_pretrained`` format) plus the training state to resume from.

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding

- ``adapter_config.json`` + ``adapter_model.safetensors``: the trainable tensors only (what ``from_pretrained`` reads),
- ``config.yaml``: the full recipe config, ``classes.json``: the class names, in label order,
- ``image_model.safetensors``: only for randomly initialised backbones, whose weights no tag can reproduce,
- ``training_state.pt``: optimizer, scheduler, step counters and every rank's RNG state, written with
  ``torch.save`` and read with ``torch.load(weights_only=True)``, so loading never runs pickled code.

The folder is written under a temporary name and renamed into place when complete, so a run killed mid-write never
leaves a half checkpoint that ``--resume`` could pick up. ``<run>/final/`` has the same layout minus the state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptkit import VideoModel
from adaptkit._io import atomic_write, atomic_write_text
from recipes._config import RecipeConfig
from recipes._distributed import World, barrier

log = logging.getLogger("recipes")

STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"
CLASSES_FILE = "classes.json"
IMAGE_WEIGHTS_FILE = "image_model.safetensors"
CHECKPOINT_PREFIX = "step_"


def save_model_dir(
    path: Path, model: VideoModel, config_yaml: str, classes: Sequence[str], image_weights: Path | None = None
) -> None:
    """Write everything needed to rebuild the trained model into ``path`` (created if needed)."""
    model.save_pretrained(path)
    atomic_write_text(path / CONFIG_FILE, config_yaml)
    atomic_write_text(path / CLASSES_FILE, json.dumps(list(classes), indent=1) + "\n")
    if image_weights is not None:
        shutil.copyfile(image_weights, path / IMAGE_WEIGHTS_FILE)


def read_classes(path: Path) -> list[str]:
    return json.loads((Path(path) / CLASSES_FILE).read_text(encoding="utf-8"))


def image_weights_in(path: Path) -> Path | None:
    """The saved random backbone of a model folder, if it has one."""
    file = Path(path) / IMAGE_WEIGHTS_FILE
    return file if file.is_file() else None


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
    tmp = folder / f".tmp_{CHECKPOINT_PREFIX}{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_dir(tmp, model, config_yaml, classes, image_weights)
    atomic_write(tmp / STATE_FILE, lambda file: torch.save(state, file))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The training state of a checkpoint; ``weights_only=True`` refuses anything but tensors and plain data."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


def prepare_run_dir(config: RecipeConfig, world: World) -> Path | None:
    """The checkpoint to resume from (None = fresh start); refuses to silently overwrite an earlier run."""
    run_dir = config.run_dir
    existing = list_checkpoints(run_dir)
    if config.train.resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None and world.is_main:
            log.warning("train.resume: no checkpoint in %s, starting from scratch", run_dir)
        return checkpoint
    if existing and not config.train.overwrite:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints (last: {existing[-1].name}). Pass --resume to continue that run, "
            "train.overwrite=true to start it again, or another name=... / train.output_dir=..."
        )
    barrier(world)  # every rank has looked before the main one deletes anything
    if world.is_main:
        for folder in ("checkpoints", "final"):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
        (run_dir / IMAGE_WEIGHTS_FILE).unlink(missing_ok=True)
    barrier(world)
    return None


# ----------------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / Python RNG states as tensors and plain data (weights_only-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
