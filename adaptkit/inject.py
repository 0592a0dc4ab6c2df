"""The public entry points: ``inject`` and ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from adaptkit.backbones import find_family
from adaptkit.checkpoint import (
    compare_architecture,
    compare_frozen_weights,
    frozen_weights_fingerprint,
    load_merged_backbone,
    load_trainable,
    read_config,
)
from adaptkit.errors import UnsupportedBackboneError
from adaptkit.model import VideoModel
from adaptkit.strategies import make_strategy


def inject(
    image_model: nn.Module,
    strategy: str = "aim",
    num_frames: int = 8,
    num_classes: int | None = 400,
    **options: Any,
) -> VideoModel:
    """Turn an image transformer into a video classifier, in place.

    The image model becomes ``video_model.backbone`` (like PEFT, it is modified in place; use
    ``video_model.unload()`` to get it back untouched). Every backbone parameter is frozen, then
    the strategy decides what trains. A model with timm's / open_clip's own gradient checkpointing
    on gets ``video_model.set_grad_checkpointing(True)``, as the video model runs the blocks itself.

    Args:
        image_model: A timm ``VisionTransformer`` / ``Eva`` / ``Beit`` / ``SwinTransformer`` /
            ``SwinTransformerV2``, or an open_clip ``VisionTransformer`` or whole CLIP model (its
            visual tower is adapted).
        strategy: A name from :func:`adaptkit.list_strategies`: the built-in ``"aim"``,
            ``"linear-probe"``, ``"space-only"``, ``"timesformer"`` (ViT families only), ``"lora"``,
            ``"st-adapter"``, ``"zero-i2v"`` (timm ViT and open_clip), and any registered with
            :func:`adaptkit.register_strategy`.
        num_frames: Clip length T the model is built for (others are accepted at inference by
            interpolating the temporal embedding, or Swin's relative temporal bias).
        num_classes: Size of the new linear head; None keeps no head (the model returns features).
        **options: Strategy options, e.g. ``ratio=0.25, scale=0.5, temporal_in=True`` for AIM
            (on Swin also ``temporal_blocks="unshifted"`` (default) or ``"all"``).

    Returns:
        A :class:`VideoModel` mapping (B, C, T, H, W) videos to (B, num_classes) logits.

    Raises:
        UnsupportedBackboneError: (a TypeError and ValueError) unsupported model (names the supported
            families; says how to unwrap a compiled, data-parallel or PEFT model), a feature its family
            refuses (an attention class it does not model, patch dropout, ...), a model that was already
            injected, or a strategy the family cannot take (timesformer on Swin).
        StrategyOptionError: (a ValueError and TypeError) unknown strategy (lists the registered ones),
            unknown option (lists the valid ones), out-of-range option, or LoRA targets that match nothing
            or do nothing.
        ValueError: ``num_frames`` / ``num_classes`` not positive integers.

    Example:
        >>> import adaptkit, timm, torch
        >>> model = timm.create_model("vit_base_patch16_clip_quickgelu_224.openai", pretrained=True)
        >>> video_model = adaptkit.inject(model, strategy="aim", num_frames=8, num_classes=400)
        >>> video_model(torch.randn(2, 3, 8, 224, 224)).shape
        torch.Size([2, 400])
    """
    if isinstance(image_model, VideoModel):
        raise UnsupportedBackboneError("this model is already a VideoModel; inject() takes the image model")
    config = make_strategy(strategy, options)
    family = find_family(image_model)
    return VideoModel(family, config, num_frames, num_classes)


def from_pretrained(
    image_model: nn.Module, path: str | Path, is_trainable: bool = False, ignore_architecture_mismatch: bool = False,
) -> VideoModel:
    """Rebuild a video model saved by ``save_pretrained`` on top of ``image_model``.

    The image model must be the same architecture (and normally the same pretrained weights)
    as the one the checkpoint was trained from. Other frozen weights (another pretrained tag, a
    random init) load with a :class:`~adaptkit.checkpoint.BackboneWeightsWarning`: the checkpoint
    records a fingerprint of them. The architecture recorded in
    ``adapter_config.json`` (family, class, model name, activation, norm, patch and input size,
    widths, heads, depth, prefix tokens, pooling, tensor names and shapes) is compared before
    anything is injected. Loading is strict: a missing or
    unexpected tensor raises.

    Args:
        image_model: The image backbone to inject into.
        path: Directory holding ``adapter_config.json`` and ``adapter_model.safetensors``.
        is_trainable: Keep the saved tensors trainable and the model in train mode; by default
            everything is frozen and the model is in eval mode, ready for inference.
        ignore_architecture_mismatch: Load even if the recorded architecture differs in a way that
            keeps the tensor shapes (e.g. another activation); a warning names the differences.

    Raises:
        ArchitectureMismatchError: (a TypeError) the architecture differs (the message gives the keys that differ
            with both values).
        FileNotFoundError: ``path`` has no ``adapter_config.json`` or weights file.
        CorruptCheckpointError: (a ValueError) a file is unreadable, not the one the config recorded (an
            interrupted save, a changed file), holds NaN/infinity, or is a PEFT adapter's folder.
        CheckpointMismatchError: (a KeyError and ValueError) missing, unexpected, wrongly shaped or
            non-float tensors.
        RuntimeError: ``image_model`` is on the meta device (materialise it and load its weights first).
    """
    config = read_config(path)
    compare_architecture(config["backbone"], find_family(image_model).identity(), path, ignore_architecture_mismatch)
    video_model = inject(
        image_model, config["strategy"], num_frames=config["num_frames"], num_classes=config["num_classes"],
        **config["options"],
    )
    try:
        if config.get("merged"):
            video_model.merge()  # fresh adapters fold to exactly nothing; the merged weights come next
            load_merged_backbone(video_model, path, config)
        else:
            compare_frozen_weights(config.get("frozen_weights"), frozen_weights_fingerprint(video_model), path)
        load_trainable(video_model, path, config)
    except BaseException:
        video_model.unload()  # a refused load gives the image model back
        raise
    if not is_trainable:
        video_model.requires_grad_(False)
        video_model.eval()
    return video_model
