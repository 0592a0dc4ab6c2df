"""Build what a recipe config names: the image backbone (with its weights), the video model, optimizer, schedule.

Pretrained weights are the point of AIM: every backbone parameter is frozen, so a backbone whose weights were never
loaded stays random for the whole run and training quietly converges to a useless model (the reference
implementation's most common reproduction failure). The builder therefore refuses to create a backbone without
weights unless the config says ``model.allow_random_init: true``, and turns any failure to load requested weights
into an error that says so.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import pickle
import re
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import nn

import adaptkit
from adaptkit.backbones import find_family
from adaptkit.strategies import parse_layers
from recipes._config import ConfigError, ModelConfig, OptimConfig, RecipeConfig, strategy_options


log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Pretrained weights were not requested (and random init not allowed), or could not be loaded."""


class SavedBackboneMismatchError(ValueError):
    """A run's saved random backbone does not fit the image model the config builds (another architecture).

    Attributes:
        image_model: the model the config built (without weights), to name how it differs.
    """

    def __init__(self, message: str, image_model: nn.Module) -> None:
        super().__init__(message)
        self.image_model = image_model


RANDOM_INIT = "random init"  # the weights description of a backbone created without weights

RANDOM_INIT_HELP = (
    "The image backbone is frozen during training (only the adapters and head learn), so a randomly initialised "
    "backbone stays random for the whole run and training silently converges to garbage. Name the weights with a "
    "pretrained tag (timm: model.name=vit_base_patch16_clip_224.openai; open_clip: model.pretrained=openai) or a "
    "local file (model.checkpoint=path/to/weights.safetensors), or set model.allow_random_init=true if a random "
    "backbone is really what you want (demos and tests)."
)
NOT_LOADED = "Refusing to continue with a random frozen backbone."


def _timm_name_and_tag(config: ModelConfig) -> tuple[str, str | None]:
    architecture, _, tag_in_name = config.name.partition(".")
    if tag_in_name and config.pretrained and tag_in_name != config.pretrained:
        raise WeightsError(
            f"model.name {config.name!r} carries the pretrained tag {tag_in_name!r} but model.pretrained is "
            f"{config.pretrained!r}: keep one"
        )
    return architecture, tag_in_name or config.pretrained


def _check_timm_tag(architecture: str, tag: str) -> None:
    """Fail before any download when timm has no weights under this name (timm would fall back to random)."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        pretrained_cfg = get_pretrained_cfg(f"{architecture}.{tag}")
    except RuntimeError:  # unknown tag
        pretrained_cfg = None
    if pretrained_cfg is None or not (pretrained_cfg.hf_hub_id or pretrained_cfg.url or pretrained_cfg.file):
        known = timm.list_pretrained(f"{architecture}.*")
        raise WeightsError(
            f"timm has no downloadable weights named {architecture}.{tag}; known tags for this architecture: "
            f"{known or 'none'}. " + RANDOM_INIT_HELP
        )


HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PROBE_TIMEOUT_S = 3.0


def _offline_reason(url: str) -> str | None:
    """Why ``url``'s host cannot be reached (Hugging Face offline mode, or one TCP connect that fails within
    :data:`PROBE_TIMEOUT_S`); None when it answers. Saves the user the hub client's minute of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        return f"{host} is unreachable ({error})"
    return None


def _check_downloadable(what: str, repo_id: str | None, url: str | None) -> None:
    """Fail in seconds, saying how to pass a local file, when weights are neither cached nor downloadable."""
    from huggingface_hub import constants, try_to_load_from_cache

    if repo_id:
        repo_id = repo_id.strip("/")
        if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in HUB_FILES):
            return  # in the Hugging Face cache: loads without the network
        url = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    if not url:
        return
    reason = _offline_reason(url)
    if reason is not None:
        raise WeightsError(
            f"cannot download the pretrained weights {what}: {reason}, and they are not in the local cache. Download "
            "them where there is network access (or copy the Hugging Face cache over), or pass a local file with "
            "model.checkpoint=path/to/weights.safetensors. " + NOT_LOADED
        )


def check_model_name(name: str, source: str) -> None:
    """Raise ValueError naming up to three close names when ``source`` (timm or open_clip) has no model ``name``
    (a timm name may carry a ``.tag``)."""
    if source == "open_clip":
        import open_clip

        architecture, known = name, open_clip.list_models()
        if architecture in known:
            return
    else:
        import timm

        architecture = name.partition(".")[0]
        if timm.is_model(architecture):
            return
        known = timm.list_models()  # only to suggest names: listing is slower than the lookup
    close = difflib.get_close_matches(architecture, known, n=3)
    other = " (`--source open_clip` / model.source=open_clip for open_clip names)" if source == "timm" else ""
    raise ValueError(f"{source} has no model {architecture!r}"
                     + (f"; did you mean {', '.join(close)}?" if close else other))


def shorten_load_error(message: str, keep: int = 3) -> str:
    """``load_state_dict``'s error in one line, naming at most ``keep`` keys per list and ``keep`` size mismatches."""
    def shorten(match: re.Match) -> str:
        keys = re.findall(r'"[^"]+"', match.group(0))
        return match.group(0) if len(keys) <= keep else ", ".join(keys[:keep]) + f" and {len(keys) - keep} more"

    parts = [part.strip() for part in re.sub(r'"[^"]+"(?:, "[^"]+")+', shorten, message).split("\n") if part.strip()]
    mismatches = [part for part in parts if part.startswith("size mismatch for")]
    if len(mismatches) > keep:
        parts = [part for part in parts if part not in mismatches[keep:]] + [
            f"and {len(mismatches) - keep} more size mismatches"]
    return " ".join(parts).rstrip(". ")  # the caller's sentence follows


def _read_weights(path: Path, device: str) -> Any:
    """A weights file's tensors on ``device`` (``"meta"``: a PyTorch file's shapes without its data), out of the usual
    training-checkpoint wrappers (``{"state_dict": ...}``, ``{"model": ...}``); never unpickles code."""
    if path.suffix == ".safetensors":
        return load_file(str(path), device=device)
    state = torch.load(path, map_location=device, weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return state


def _read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Names and shapes of the tensors in a weights file, without reading their data; None if unreadable. Names lose
    the ``module.`` prefix of DistributedDataParallel checkpoints, as timm's and open_clip's loaders drop it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as file:
                shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
        else:
            state = _read_weights(path, "meta")
            if not isinstance(state, dict):
                return None
            shapes = {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}
    except Exception:  # noqa: BLE001 - the caller reports the original load error
        return None
    return {key.removeprefix("module."): shape for key, shape in shapes.items()}


def _retry_with_the_files_head(config: ModelConfig, architecture: str, checkpoint: Path,
                               overlay: dict[str, Any]) -> nn.Module | None:
    """The model built with the classifier ``checkpoint`` has (another class count, or none), or None.

    The video model replaces the image model's classifier, so a checkpoint whose head differs from the architecture's
    default (ImageNet-21k's 21841 classes, a headless self-supervised or feature-extractor file) is as good as any.
    Only tried where ``model.kwargs`` does not set ``num_classes``, and only if the file's head explains the failure:
    the build loads strictly, so any other mismatch still fails.
    """
    import timm

    if "num_classes" in config.kwargs:
        return None
    shapes = _read_tensor_shapes(checkpoint)
    if shapes is None:
        return None
    with torch.device("meta"):
        classifier = timm.create_model(architecture, pretrained=False, **config.kwargs).pretrained_cfg.get("classifier")
    if not isinstance(classifier, str):
        return None
    head = shapes.get(f"{classifier}.weight")
    num_classes = head[0] if head is not None else 0
    try:
        model = timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay={
            **overlay, "num_classes": num_classes}, **config.kwargs, num_classes=num_classes)
    except Exception:  # noqa: BLE001 - not the head's fault: the caller reports the first error
        return None
    log.info("model.checkpoint %s has %s: loaded it that way (the video model replaces the image model's classifier)",
             checkpoint, f"a {num_classes}-class head" if num_classes else "no classifier head")
    return model


def _create_timm(config: ModelConfig, checkpoint: Path | None, load_weights: bool) -> tuple[nn.Module, str]:
    import timm

    architecture, tag = _timm_name_and_tag(config)
    if checkpoint is not None:
        # timm's own loader: safetensors or weights_only torch files, the architecture's checkpoint filter (e.g.
        # OpenAI CLIP layouts), strict key matching.
        overlay = {"file": str(checkpoint), "custom_load": False}
        if "num_classes" in config.kwargs:  # the file's head has this size: load it instead of dropping it
            overlay["num_classes"] = config.kwargs["num_classes"]
        try:
            model = timm.create_model(architecture, pretrained=load_weights, pretrained_cfg_overlay=overlay,
                                      **config.kwargs)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the weights are not in the model
            model = _retry_with_the_files_head(config, architecture, checkpoint, overlay) if load_weights else None
            if model is None:
                reason = shorten_load_error(str(error))
                if isinstance(error, (KeyError, IndexError, pickle.UnpicklingError, EOFError)):  # while unpickling
                    reason = f"not a readable safetensors or PyTorch weights file ({type(error).__name__}: {error})"
                raise WeightsError(f"could not load model.checkpoint {checkpoint} into {architecture}: {reason}. "
                                   + NOT_LOADED) from error
        return model, f"file {checkpoint}"
    if tag is None:
        # A shape-only build of a model that model.pretrain will give weights to is fine.
        if not config.allow_random_init and not (config.pretrain is not None and not load_weights):
            raise WeightsError(f"model {config.name!r}: no pretrained tag and no model.checkpoint. " + RANDOM_INIT_HELP)
        return timm.create_model(architecture, pretrained=False, **config.kwargs), RANDOM_INIT
    _check_timm_tag(architecture, tag)
    if load_weights:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(f"{architecture}.{tag}")
        _check_downloadable(f"{architecture}.{tag}", cfg.hf_hub_id, cfg.url)
    try:
        model = timm.create_model(f"{architecture}.{tag}", pretrained=load_weights, **config.kwargs)
    except Exception as error:  # noqa: BLE001 - download or cache failure
        raise WeightsError(
            f"could not load the pretrained weights {architecture}.{tag} ({type(error).__name__}: {error}). Check the "
            "network or the Hugging Face cache, or download the file and pass model.checkpoint. " + NOT_LOADED
        ) from error
    return model, f"timm {architecture}.{tag}"


OPEN_CLIP_RANDOM = "No pretrained weights loaded for model"  # open_clip's root-logger warning, once per create_model


def _not_open_clip_random(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(OPEN_CLIP_RANDOM)


@contextlib.contextmanager
def _open_clip_weights_follow() -> Iterator[None]:
    """Silence open_clip's "No pretrained weights loaded ... Model initialized randomly" while building a model whose
    weights come from a file right after (or that no weights are wanted for: a shape-only build); a model that does
    stay random (``allow_random_init``) keeps the warning."""
    root = logging.getLogger()
    root.addFilter(_not_open_clip_random)
    try:
        yield
    finally:
        root.removeFilter(_not_open_clip_random)


def _visual_tower_only(config: ModelConfig, checkpoint: Path) -> nn.Module | None:
    """The CLIP model with ``checkpoint`` loaded into its image tower, when the file holds exactly that tower's tensors
    (``model.visual.state_dict()``, with or without the ``visual.`` prefix); None for any other file.

    Raises:
        WeightsError: the file has the image tower's tensor names but not their shapes.
    """
    import open_clip

    shapes = _read_tensor_shapes(checkpoint)
    with _open_clip_weights_follow():  # loaded from the file below
        model = open_clip.create_model(config.name, **config.kwargs)
    expected = set(model.visual.state_dict())
    if shapes is None or {key.removeprefix("visual.") for key in shapes} != expected:
        return None
    state = _read_weights(checkpoint, "cpu")
    state = {key.removeprefix("module.").removeprefix("visual."): value for key, value in state.items()}
    try:
        model.visual.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"could not load model.checkpoint {checkpoint} into {config.name}'s image tower: "
                           f"{shorten_load_error(str(error))}. " + NOT_LOADED) from None
    log.info("model.checkpoint %s holds the image tower only: loaded into %s's image tower", checkpoint, config.name)
    return model


def _create_open_clip(config: ModelConfig, checkpoint: Path | None, load_weights: bool) -> tuple[nn.Module, str]:
    import open_clip

    pretrained = str(checkpoint) if checkpoint is not None else config.pretrained
    if pretrained is None:
        if not config.allow_random_init:
            raise WeightsError(f"open_clip model {config.name!r}: no model.pretrained tag and no model.checkpoint. "
                               + RANDOM_INIT_HELP)
        with _open_clip_weights_follow() if not load_weights else contextlib.nullcontext():
            model, source = open_clip.create_model(config.name, **config.kwargs), RANDOM_INIT
    else:
        if checkpoint is None and load_weights:
            cfg = open_clip.get_pretrained_cfg(config.name, pretrained) or {}
            _check_downloadable(f"{config.name} / {pretrained}", cfg.get("hf_hub"), cfg.get("url"))
        try:  # open_clip loads files weights_only and, with require_pretrained, fails instead of going random
            with _open_clip_weights_follow():  # a shape-only build, or the weights load (or it raises)
                model = open_clip.create_model(config.name, pretrained=pretrained if load_weights else None,
                                               require_pretrained=load_weights, **config.kwargs)
        except Exception as error:  # noqa: BLE001
            model = _visual_tower_only(config, checkpoint) if checkpoint is not None and load_weights else None
            if model is None:
                raise WeightsError(f"could not load open_clip weights {config.name} / {pretrained}: "
                                   f"{shorten_load_error(str(error))}. " + NOT_LOADED) from error
        source = f"open_clip {config.name} {pretrained}"
    return model.visual, source  # only the image tower is adapted; the text tower's memory goes


def checkpoint_file(config: ModelConfig) -> Path | None:
    """``model.checkpoint`` as a path (None when unset).

    Raises:
        FileNotFoundError: it names no file. WeightsError: a TorchScript archive (loading one runs its code).
    """
    if config.checkpoint is None:
        return None
    checkpoint = Path(config.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"model.checkpoint {checkpoint} does not exist")
    if is_torchscript(checkpoint):
        raise WeightsError(
            f"model.checkpoint {checkpoint} is a TorchScript archive (like OpenAI's own ViT-B-16.pt), and loading one "
            "runs the code inside it, which adaptkit never does with a checkpoint. The same weights load through a "
            "pretrained tag (timm vit_base_patch16_clip_quickgelu_224.openai, or model.source=open_clip "
            "model.pretrained=openai); or convert a file you trust once: python -c \"import torch; torch.save(torch.jit."
            f"load('{checkpoint}', map_location='cpu').state_dict(), 'state_dict.pt')\" and pass state_dict.pt")
    return checkpoint


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding compiled code), which ``torch.load`` refuses."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def create_image_model(
    config: ModelConfig, weights_file: str | Path | None = None, load_weights: bool = True
) -> tuple[nn.Module, str]:
    """Create the image backbone named by ``config`` and load its weights.

    Args:
        config: the ``model`` section.
        weights_file: a run's saved random backbone (:func:`save_image_weights`); when given, the backbone is built
            without weights and then loads this file.
        load_weights: False skips loading (shape-only builds on the meta device); the checks still run.

    Returns:
        The image model (the visual tower for open_clip) and a short description of where its weights came from
        (:data:`RANDOM_INIT` for none).

    Raises:
        WeightsError: no weights requested without ``allow_random_init``, or requested weights failed to load.
        SavedBackboneMismatchError: ``weights_file`` holds another architecture's tensors.
        FileNotFoundError: ``model.checkpoint`` does not exist.
    """
    check_model_name(config.name, config.source)
    if weights_file is not None:
        architecture = ModelConfig(name=config.name.partition(".")[0] if config.source == "timm" else config.name,
                                   source=config.source, kwargs=dict(config.kwargs), allow_random_init=True)
        model, _ = create_image_model(architecture, load_weights=False)
        try:
            load_image_weights(model, weights_file)
        except RuntimeError as error:  # missing, unexpected or reshaped tensors: the config builds another model
            raise SavedBackboneMismatchError(f"the saved image model {weights_file} does not fit {config.name} as "
                                             f"configured: {shorten_load_error(str(error))}", model) from None
        return model, f"file {weights_file}"
    if load_weights:
        checkpoint = checkpoint_file(config)
    else:  # shape-only builds never read the file
        checkpoint = None if config.checkpoint is None else Path(config.checkpoint)
    create = _create_timm if config.source == "timm" else _create_open_clip
    return create(config, checkpoint, load_weights)


def backbone_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a backbone's full state dict (for randomly initialised backbones, whose weights no tag can
    reproduce); take it before ``inject`` rebuilds the blocks."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def save_image_weights(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write :func:`backbone_tensors` as safetensors, atomically."""
    from safetensors.torch import save_file

    from recipes._files import atomic_write

    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_image_weights(model: nn.Module, path: str | Path) -> None:
    """Strictly load a state dict from .safetensors or a torch file (``weights_only=True``: no pickled code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)


def build_video_model(config: RecipeConfig, image_model: nn.Module, num_classes: int) -> adaptkit.VideoModel:
    """Inject the configured strategy into ``image_model``, for ``config.data.num_frames`` frames.

    Raises:
        ConfigError: ``model.options.layers`` selects blocks the backbone does not have (said, like the option errors
            the config's checks find, with the ``model.options:`` prefix; the depth is known only here).
    """
    options = strategy_options(config.model)
    if "layers" in options:
        try:
            parse_layers(options["layers"], len(find_family(image_model).blocks()))
        except ValueError as error:
            raise ConfigError(f"model.options: {error}") from None
    video_model = adaptkit.inject(
        image_model, config.model.strategy, num_frames=config.data.num_frames, num_classes=num_classes, **options,
    )
    video_model.set_grad_checkpointing(config.model.grad_checkpointing)
    return video_model


def check_crop_size(video_model: adaptkit.VideoModel, crop_size: int) -> None:
    """Refuse, before any data is read, a ``data.augment.crop_size`` the model cannot embed, in the config's terms
    (the library's own message speaks of frames and constructor arguments)."""
    try:
        video_model.family.check_frame_size(crop_size, crop_size)
    except ValueError as error:
        what = re.split(r"[;.] ", str(error), maxsplit=1)[0]
        raise ValueError(f"data.augment.crop_size={crop_size}: {what}; set data.augment.crop_size (and "
                         "data.augment.resize_size) to what it takes") from None


def describe_backbone(video_model: adaptkit.VideoModel) -> str:
    """The architecture actually built, e.g. ``VisionTransformer (depth 2, width 64, patch 8, 32x32 input)``: the
    config's model name alone can mislead once ``model.kwargs`` change depth or width."""
    identity = video_model.family.identity()  # patch_size and image_size: [h, w] or None
    parts = [f"depth {identity['depth']}", f"width {identity['embed_dim']}"]
    if identity.get("patch_size"):
        parts.append(f"patch {identity['patch_size'][0]}")
    if identity.get("image_size"):
        parts.append("{}x{} input".format(*identity["image_size"]))
    name = identity.get("architecture") or identity["class"]
    return f"{name} ({', '.join(parts)})"


def param_groups(model: adaptkit.VideoModel, config: OptimConfig) -> list[dict[str, Any]]:
    """The model's own optimizer groups (``VideoModel.param_groups``: by role, no weight decay on 1-D tensors,
    temporal embeddings and position tables unless ``optim.no_decay`` is ``none``), with the new head at ``lr``
    and everything else (adapters, temporal embedding, norm copies, finetuned backbone) at
    ``lr * backbone_lr_mult``, as the reference's ``backbone`` lr multiplier does for ViT-L."""
    groups = model.param_groups(weight_decay=config.weight_decay)
    decay_all = config.no_decay == "none"
    for group in groups:
        group["lr"] = config.lr if group["role"] == "head" else config.lr * config.backbone_lr_mult
        if decay_all:
            group["weight_decay"] = config.weight_decay
    embedding = model.temporal_embed
    if config.temporal_embed_lr_mult != 1.0 and embedding is not None:
        # The zero-initialised embedding is the only source of frame order: with few steps it can learn too
        # slowly at the shared lr (measured on the embedded benchmark), so it may get its own group.
        moved = {id(p) for p in embedding.parameters() if p.requires_grad}
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in moved]
        groups = [g for g in groups if g["params"]]
        groups.append({"name": "temporal_embedding", "role": "adapters",
                       "weight_decay": config.weight_decay if decay_all else 0.0,
                       "params": [p for p in embedding.parameters() if p.requires_grad],
                       "lr": config.lr * config.backbone_lr_mult * config.temporal_embed_lr_mult})
    return groups


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable tensors, fused on CUDA unless ``optim.fused`` says otherwise."""
    fused = device.type == "cuda" if config.fused is None else config.fused
    return torch.optim.AdamW(
        param_groups(model, config), lr=config.lr, betas=tuple(config.betas), eps=config.eps,
        weight_decay=config.weight_decay, fused=fused or None,
    )


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.0):  # noqa: ANN201 - a LambdaLR factor
    """lr factor per optimizer step: linear warmup to 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: ``optim.warmup_epochs`` of linear warmup, then cosine to ``optim.min_lr``."""
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total_steps, config.min_lr / config.lr))
