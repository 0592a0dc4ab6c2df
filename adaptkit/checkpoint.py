"""Adapter-only checkpoints: ``adapter_config.json`` + ``adapter_model.safetensors``.

Only trainable tensors are stored (for AIM on ViT-B/16 that is 11M of 97M parameters).
safetensors holds raw tensors, so loading never executes pickled code.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from adaptkit.io import atomic_write, atomic_write_text

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
IMAGE_WEIGHTS_NAME = "image_model.safetensors"
"""A merged model's backbone: a plain timm / open_clip state dict (without the image classifier head)."""
FORMAT_VERSION = 1


def save_pretrained(video_model: nn.Module, path: str | Path) -> None:
    """Write the model's config and trainable tensors into directory ``path`` (atomically, per file).

    A merged model (``video_model.merge()``) also writes ``image_model.safetensors``: its backbone as a
    plain timm / open_clip state dict, which holds the folded adapters.

    Raises:
        FileExistsError: ``path`` is an existing file, not a folder.
    """
    from adaptkit import __version__

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file: save_pretrained writes a folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    tensors = {k: v.detach().contiguous().cpu() for k, v in video_model.trainable_state_dict().items()}
    config = {"format_version": FORMAT_VERSION, "adaptkit_version": __version__, **video_model.strategy_config}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    if config.get("merged"):  # the adapters live in the backbone's weights now: store them as a plain state dict
        image = {k: v.detach().contiguous().cpu() for k, v in video_model.backbone_state_dict().items()}
        atomic_write(path / IMAGE_WEIGHTS_NAME, lambda tmp: save_file(image, tmp, metadata={"format": "pt"}))
    atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as safetensors (truncated, overwritten, not safetensors)."""


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no code runs). Raises CorruptCheckpointError naming the file."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{file} is not a readable safetensors file ({error}); save the model again "
                                     "or restore the file") from error


class ArchitectureMismatchError(TypeError):
    """An adapter checkpoint was recorded on another backbone architecture than the image model it is loaded into.

    ``differences`` maps each differing identity key (``BackboneFamily.identity()``) to (recorded, found).
    """

    def __init__(self, message: str, differences: dict[str, tuple[Any, Any]]) -> None:
        super().__init__(message)
        self.differences = differences


def describe_differences(differences: dict[str, tuple[Any, Any]]) -> str:
    """``activation: 'QuickGELU' in the checkpoint, 'GELU' here; depth: ...``, keys sorted.

    Lists of names (the ``tensors`` key) are described by what only one side has, three names each.
    """
    def describe(key: str, saved: Any, found: Any) -> str:
        if not (isinstance(saved, list) and isinstance(found, list) and all(isinstance(v, str) for v in saved + found)):
            return f"{key}: {saved!r} in the checkpoint, {found!r} here"
        sides = [("only in the checkpoint", sorted(set(saved) - set(found))),
                 ("only here", sorted(set(found) - set(saved)))]
        return f"{key}: " + ", ".join(f"{side} {names[:3]}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                                      for side, names in sides if names)

    return "; ".join(describe(key, saved, found) for key, (saved, found) in sorted(differences.items()))


def compare_architecture(saved: dict[str, Any], found: dict[str, Any], path: str | Path, ignore: bool) -> None:
    """Refuse a checkpoint recorded on another architecture than ``found``; warn instead if ``ignore``.

    Raises:
        ArchitectureMismatchError: (a TypeError) naming each differing key with both values.
    """
    differences = {k: (saved[k], found[k]) for k in saved.keys() & found.keys() if saved[k] != found[k]}
    if not differences:
        return
    if len(differences) > 1:
        differences.pop("tensors", None)  # the named keys explain it; the tensor list is for what they cannot tell
    message = f"checkpoint {path} was made on another backbone: they differ in {', '.join(sorted(differences))} " \
              f"({describe_differences(differences)})"
    if not ignore:
        raise ArchitectureMismatchError(f"{message}. Pass ignore_architecture_mismatch=True to load it anyway",
                                        differences)
    warnings.warn(f"{message}; loading anyway (ignore_architecture_mismatch=True)", stacklevel=3)


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a saved video model."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: not a directory written by save_pretrained()")
    config = json.loads(file.read_text(encoding="utf-8"))
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{file}: unsupported format_version {config.get('format_version')!r} (expected {FORMAT_VERSION})")
    return config


def load_merged_backbone(video_model: nn.Module, path: str | Path) -> None:
    """Load a merged model's ``image_model.safetensors`` into ``video_model``'s backbone (strict)."""
    file = Path(path) / IMAGE_WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {IMAGE_WEIGHTS_NAME} in {path}, although its {CONFIG_NAME} says merged")
    video_model.load_backbone_state_dict(read_safetensors(file))


def load_trainable(video_model: nn.Module, path: str | Path) -> None:
    """Copy saved tensors into the model's trainable parameters; strict on names and shapes."""
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    copy_strict(video_model.trainable_state_dict(), read_safetensors(file), f"checkpoint {file}")


def copy_strict(targets: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``saved`` into ``targets`` in place, strict on names and shapes.

    Raises:
        KeyError: missing or unexpected names. ValueError: a tensor of the wrong shape. Both name ``source``.
    """
    missing, unexpected = sorted(set(targets) - set(saved)), sorted(set(saved) - set(targets))
    if missing or unexpected:
        raise KeyError(
            f"{source} does not match the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    wrong = [f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(t.shape)}" for k, t in targets.items()
             if saved[k].shape != t.shape]
    if wrong:
        raise ValueError(f"{source} has tensors of the wrong shape: {wrong[:8]}")
    with torch.no_grad():
        for name, tensor in targets.items():
            tensor.copy_(saved[name])
