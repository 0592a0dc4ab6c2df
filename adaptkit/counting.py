"""Parameter and compute counts in the paper's conventions."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared parameters are counted once.

    Raises:
        UnloadedModelError: ``model`` is a :class:`~adaptkit.VideoModel` after ``unload()``.
    """
    from adaptkit.model import VideoModel

    if isinstance(model, VideoModel):
        model._require_loaded("count its parameters")
    params = list(model.parameters())  # nn.Module.parameters() already de-duplicates
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return total, trainable


def count_flops(video_model: nn.Module, image_size: int | tuple[int, int] | None = None, views: int = 1,
                num_frames: int | None = None) -> float:
    """Inference cost in GMACs for ``views`` clips, the unit the AIM paper calls "GFLOPs".

    The paper (fvcore convention) counts one multiply-accumulate as one FLOP; PyTorch's counter
    counts two, so its total is halved. Runs on the meta device: no memory, no real compute, and
    the model given is not touched.

    Args:
        video_model: A :class:`~adaptkit.VideoModel`.
        image_size: Frame height and width in pixels (one int for square frames); None (the default) takes the
            backbone's input size (224 where the model does not record one).
        views: Number of views (temporal clips x spatial crops) per video, >= 1.
        num_frames: Clip length T, >= 1; None (the default) takes the model's ``num_frames``.

    Returns:
        GMACs (10^9 multiply-accumulates) for ``views`` clips of (C, T, height, width), e.g. ~606
        for AIM ViT-B/16 at 8 frames and 3 views (AIM Table 2).

    Raises:
        ValueError: if ``views``, ``num_frames`` or ``image_size`` is not a positive integer (or pair).
    """
    for name, value in (("views", views), ("num_frames", 1 if num_frames is None else num_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"count_flops {name} must be a positive integer, got {value!r}")
    if image_size is None:
        image_size = video_model.family.input_size() or 224
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (height, width)):
        raise ValueError(f"count_flops image_size must be a positive integer or (height, width), got {image_size!r}")
    frames = video_model.num_frames if num_frames is None else num_frames
    # Inference only: nothing requires grad, which also keeps the counter's module tracker from hooking autograd on
    # parameters used directly as inputs (a MAP head's latent query fails there under no_grad).
    meta_model = _meta_copy(video_model).eval().requires_grad_(False)
    channels = video_model.in_channels
    video = torch.empty(1, channels, frames, height, width, device="meta", dtype=next(meta_model.parameters()).dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta_model(video)
    return counter.get_total_flops() / 2 / 1e9 * views


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters and buffers live on the meta device."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)
