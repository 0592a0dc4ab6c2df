"""Adapter-only checkpoints: ``adapter_config.json`` + ``adapter_model.safetensors``.

Only the adapter set's own tensors are stored (for AIM on ViT-B/16 that is 11M of 97M parameters).
safetensors holds raw tensors, so loading never executes pickled code. The config is written last and records the
SHA-256 of each weights file: a save killed between the files, or a file changed afterwards, is refused on load
instead of mixing new weights with an old config.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from adaptkit.errors import AdaptkitError, CheckpointMismatchError
from adaptkit.io import atomic_write, atomic_write_text, sha256_file

__all__ = [
    "CONFIG_NAME",
    "IMAGE_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "ArchitectureMismatchError",
    "BackboneWeightsWarning",
    "CorruptCheckpointError",
    "describe_differences",
    "read_config",
    "save_pretrained",
    "sha256_file",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
IMAGE_WEIGHTS_NAME = "image_model.safetensors"
"""A merged model's backbone: a plain timm / open_clip state dict (without the image classifier head)."""
FORMAT_VERSION = 1


def save_pretrained(video_model: nn.Module, path: str | Path) -> None:
    """Write the model's config and its adapter set's tensors into directory ``path``.

    Each file is written atomically, the config last with the SHA-256 of the weights files, so a save killed half-way
    leaves a folder that loads the old model or is refused, never a mix. A merged model (``video_model.merge()``)
    also writes ``image_model.safetensors``: its backbone as a plain timm / open_clip state dict, which holds the
    folded adapters (an unmerged save removes a stale one).

    Raises:
        FileExistsError: ``path`` is an existing file, not a folder.
    """
    from adaptkit import __version__

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file: save_pretrained writes a folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    saved = video_model.trainable_state_dict()
    outside = [name for name, p in video_model._active_parameters() if p.requires_grad and name not in saved]
    if outside:
        warnings.warn(f"{len(outside)} trainable tensor(s) outside the adapter set are not saved: "
                      f"{outside[:3]}{' ...' if len(outside) > 3 else ''} (a checkpoint holds the tensors the "
                      "strategy trains; save others yourself)", stacklevel=3)
    tensors = {k: v.detach().contiguous().cpu() for k, v in saved.items()}
    config = {"format_version": FORMAT_VERSION, "adaptkit_version": __version__, **video_model.strategy_config}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    digests = {WEIGHTS_NAME: sha256_file(path / WEIGHTS_NAME)}
    if config.get("merged"):  # the adapters live in the backbone's weights now: store them as a plain state dict
        image = {k: v.detach().contiguous().cpu() for k, v in video_model.backbone_state_dict().items()}
        atomic_write(path / IMAGE_WEIGHTS_NAME, lambda tmp: save_file(image, tmp, metadata={"format": "pt"}))
        digests[IMAGE_WEIGHTS_NAME] = sha256_file(path / IMAGE_WEIGHTS_NAME)
    config["sha256"] = digests
    fingerprint = None if config.get("merged") else frozen_weights_fingerprint(video_model)
    if fingerprint is not None:
        config["frozen_weights"] = fingerprint
    atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    if not config.get("merged"):
        (path / IMAGE_WEIGHTS_NAME).unlink(missing_ok=True)  # a merged model's, saved here before: not this model's


class BackboneWeightsWarning(UserWarning):
    """An adapter is loaded onto other frozen image-model weights than it was trained on (another pretrained tag,
    a random init): it loads, but its outputs are not the trained model's."""


FINGERPRINT_TOLERANCE = 1e-2
"""Relative tolerance of :func:`compare_frozen_weights`: passes the rounding of bf16/fp16 copies of the same weights
(about 1e-3), fails other weights (the signed sum of independent weights differs by about its norm)."""


def frozen_weights_fingerprint(video_model: nn.Module) -> dict[str, float] | None:
    """Two numbers that tell the frozen image-model weights apart: the float64 norm and the alternating-sign sum of
    every backbone parameter the adapter set does not hold, outside the modules the strategy wrapped. None on the
    meta device or when the set holds them all (full finetuning)."""
    restore = video_model._restore
    skip = {id(tensor) for tensor in video_model.trainable_state_dict().values()}
    # The wrapped modules' frozen tensors are left out on both sides: PEFT's LoRA on nn.MultiheadAttention swaps in
    # new in_proj_weight objects and leaves float round-off in them while training.
    wrapped = tuple(f"{name}." for name in video_model.strategy.wrapped_modules(restore.strategy_state) or {})
    frozen = [p for name, p in video_model.backbone.named_parameters()
              if id(p) in restore.original_params and id(p) not in skip and not name.startswith(wrapped)]
    if not frozen or any(p.is_meta for p in frozen):
        return None
    square, signed = 0.0, 0.0
    with torch.no_grad():
        for param in frozen:
            flat = param.detach().reshape(-1).to(torch.float64)
            square += float(flat.square().sum())
            signed += float(flat[0::2].sum() - flat[1::2].sum())
    return {"norm": square ** 0.5, "signed_sum": signed}


def compare_frozen_weights(saved: Any, found: dict[str, float] | None, path: str | Path) -> None:
    """Warn (:class:`BackboneWeightsWarning`) when the frozen weights differ from those recorded at save time."""
    if not isinstance(saved, dict) or found is None:
        return  # saved before fingerprints, or nothing frozen to compare
    norm = max(abs(saved.get("norm", 0.0)), found["norm"], 1e-30)
    if (abs(saved.get("norm", 0.0) - found["norm"]) <= FINGERPRINT_TOLERANCE * norm
            and abs(saved.get("signed_sum", 0.0) - found["signed_sum"]) <= FINGERPRINT_TOLERANCE * norm):
        return
    warnings.warn(
        f"{path} was trained on other frozen image-model weights than these (fingerprint norm "
        f"{saved.get('norm', 0.0):.6g} vs {found['norm']:.6g}, signed sum {saved.get('signed_sum', 0.0):.6g} vs "
        f"{found['signed_sum']:.6g}): another pretrained tag or checkpoint, or a random init. It loads, but its outputs "
        "are not the trained model's: build the image model with the weights it was trained on",
        BackboneWeightsWarning, stacklevel=3)


class CorruptCheckpointError(AdaptkitError, ValueError):
    """A checkpoint file exists but cannot be read: weights truncated, overwritten or not safetensors, or a config
    that is malformed or of another format version."""


def read_safetensors(file: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no code runs), checked against ``sha256`` when given.

    Raises:
        CorruptCheckpointError: naming the file: unreadable, its SHA-256 is not the one its config recorded, or a
            tensor holds NaN or infinity.
    """
    if sha256 is not None and file.is_file() and sha256_file(file) != sha256:
        raise CorruptCheckpointError(f"{file} is not the file its {CONFIG_NAME} was saved with (SHA-256 differs): a "
                                     "save was interrupted or the file was changed; save the model again")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{file} is not a readable safetensors file ({error}); save the model again "
                                     "or restore the file") from error
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CorruptCheckpointError(f"{file} holds NaN or infinite values in {bad[:3]}"
                                     f"{' ...' if len(bad) > 3 else ''}: a diverged training or a damaged file")
    return tensors


class ArchitectureMismatchError(AdaptkitError, TypeError):
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


REQUIRED_KEYS = ("strategy", "options", "num_frames", "num_classes", "backbone")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "strategy": (lambda v: isinstance(v, str), "a strategy name"),
    "options": (lambda v: isinstance(v, dict), "an object of strategy options"),
    "num_frames": (_positive_int, "a positive integer"),
    "num_classes": (lambda v: v is None or _positive_int(v), "a positive integer or null"),
    "backbone": (lambda v: isinstance(v, dict), "an object: the backbone's identity"),
    "merged": (lambda v: isinstance(v, bool), "true or false"),
    # Present since digests were recorded (older folders lack the key): each weights file's SHA-256, the adapter's
    # always. A value that is there but unusable must not switch the integrity check off.
    "sha256": (lambda v: isinstance(v, dict) and WEIGHTS_NAME in v and all(
        isinstance(d, str) and len(d) == 64 for d in v.values()),
        f"file name -> SHA-256 hex, {WEIGHTS_NAME}'s included"),
    "frozen_weights": (lambda v: isinstance(v, dict) and all(_number(v.get(k)) for k in ("norm", "signed_sum")),
                       "an object with numbers norm and signed_sum"),
}
KNOWN_KEYS = {"format_version", "adaptkit_version", "merged", "sha256", "frozen_weights", *REQUIRED_KEYS}


def read_config(path: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a saved video model.

    Raises:
        FileNotFoundError: no config in ``path``.
        CorruptCheckpointError: the file is not a JSON object, lacks a required key, holds a value of the wrong type
            (e.g. ``sha256`` that is not the file-to-digest object save_pretrained writes), is of another
            ``format_version``, or is a PEFT adapter's config.
    """
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}: not a directory written by save_pretrained()")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise CorruptCheckpointError(f"{file} is not valid JSON ({error}); save the model again") from None
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"{file} holds a JSON {type(config).__name__}, not the object save_pretrained "
                                     "writes; save the model again")
    if "peft_type" in config and "format_version" not in config:
        raise CorruptCheckpointError(
            f"{file} is a PEFT adapter ({config['peft_type']}), not an adaptkit one: load it with "
            "peft.PeftModel.from_pretrained on the image model. adaptkit's folders use the same file names but record "
            "the video model (strategy, frames, backbone identity) and key tensors as the video model does")
    missing = [key for key in ("format_version", *REQUIRED_KEYS) if key not in config]
    if missing:
        raise CorruptCheckpointError(f"{file} lacks {', '.join(missing)}; save the model again")
    if config["format_version"] != FORMAT_VERSION:
        raise CorruptCheckpointError(f"{file}: unsupported format_version {config['format_version']!r} (this adaptkit "
                                     f"reads {FORMAT_VERSION}; saved by adaptkit {config.get('adaptkit_version')})")
    wrong = [f"{key} ({rule})" for key, (check, rule) in _VALUE_CHECKS.items()
             if key in config and not check(config[key])]
    digests = config.get("sha256")
    if config.get("merged") is True and isinstance(digests, dict) and IMAGE_WEIGHTS_NAME not in digests:
        wrong.append(f"sha256 (a merged model's config records {IMAGE_WEIGHTS_NAME}'s)")
    if wrong:  # a hand-edited or damaged config: refuse it rather than load past its checks (e.g. digests)
        raise CorruptCheckpointError(f"{file} has malformed values: {'; '.join(wrong)}; save the model again")
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        warnings.warn(f"{file}: ignoring keys this adaptkit does not know: {unknown} (saved by adaptkit "
                      f"{config.get('adaptkit_version')}?)", stacklevel=3)
    return config


def digest_of(config: dict[str, Any], name: str) -> str | None:
    """The SHA-256 ``config`` recorded for file ``name`` (None for folders saved before digests were recorded)."""
    digests = config.get("sha256")
    return digests.get(name) if isinstance(digests, dict) else None


def load_merged_backbone(video_model: nn.Module, path: str | Path, config: dict[str, Any]) -> None:
    """Load a merged model's ``image_model.safetensors`` into ``video_model``'s backbone (strict)."""
    file = Path(path) / IMAGE_WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {IMAGE_WEIGHTS_NAME} in {path}, although its {CONFIG_NAME} says merged")
    video_model.load_backbone_state_dict(read_safetensors(file, digest_of(config, IMAGE_WEIGHTS_NAME)))


def load_trainable(video_model: nn.Module, path: str | Path, config: dict[str, Any]) -> None:
    """Copy saved tensors into the model's adapter set (:meth:`~adaptkit.VideoModel.trainable_state_dict`); strict
    on names and shapes."""
    file = Path(path) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
    copy_strict(video_model.trainable_state_dict(), read_safetensors(file, digest_of(config, WEIGHTS_NAME)),
                f"checkpoint {file}")


def copy_strict(targets: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``saved`` into ``targets`` in place, strict on names and shapes.

    Raises:
        CheckpointMismatchError: (a KeyError and ValueError) naming ``source``: missing or unexpected names,
            tensors of the wrong shape, or non-float data for float tensors.
        RuntimeError: the targets are on the meta device.
    """
    missing, unexpected = sorted(set(targets) - set(saved)), sorted(set(saved) - set(targets))
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{source} does not match the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    wrong = [f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(t.shape)}" for k, t in targets.items()
             if saved[k].shape != t.shape]
    if wrong:
        raise CheckpointMismatchError(f"{source} has tensors of the wrong shape: {wrong[:8]}")
    kinds = [f"{k}: saved {saved[k].dtype} for a {t.dtype} tensor" for k, t in targets.items()
             if saved[k].is_floating_point() != t.is_floating_point()]
    if kinds:
        raise CheckpointMismatchError(f"{source} has tensors of the wrong kind: {kinds[:8]}")
    if any(t.is_meta for t in targets.values()):
        raise RuntimeError(f"cannot load {source} into a model on the meta device (it has no storage to copy into): "
                           "materialise the image model first (e.g. model.to_empty(device='cpu') and load its "
                           "weights), then load the adapter")
    with torch.no_grad():
        for name, tensor in targets.items():
            tensor.copy_(saved[name])
