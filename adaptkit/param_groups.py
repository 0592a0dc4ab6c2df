"""Optimizer groups of a video model by role, with timm's no-weight-decay rule."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from torch import nn

from adaptkit.layers import RelativeTemporalBias, TemporalEmbedding

if TYPE_CHECKING:
    from adaptkit.model import VideoModel


def no_weight_decay(video_model: VideoModel) -> set[str]:
    """See :meth:`VideoModel.no_weight_decay <adaptkit.VideoModel.no_weight_decay>`."""
    exempt = set(video_model._restore.no_decay_params) if video_model._restore is not None else set()
    for module in video_model.modules():
        if isinstance(module, (TemporalEmbedding, RelativeTemporalBias)):
            exempt.update(id(p) for p in module.parameters())
    return {n for n, p in video_model._active_parameters() if p.requires_grad and (p.ndim <= 1 or id(p) in exempt)}


def param_groups(video_model: VideoModel, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """See :meth:`VideoModel.param_groups <adaptkit.VideoModel.param_groups>`."""
    video_model._require_loaded("build parameter groups")
    exempt = video_model.no_weight_decay()
    head = {id(p) for p in video_model.head.parameters()}
    copies = {id(p) for path in video_model._restore.trainable_copies
              for p in operator.attrgetter(path)(video_model.backbone).parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in video_model._active_parameters():
        if not param.requires_grad:
            continue
        key = id(param)
        role = ("head" if key in head else "norms" if key in copies
                else "backbone" if key in video_model._restore.original_params else "adapters")
        groups.setdefault((role, name in exempt), []).append(param)
    order = [(role, no_decay) for role in ("head", "adapters", "norms", "backbone") for no_decay in (False, True)]
    return [
        {"name": role + ("_no_decay" if no_decay else ""), "role": role, "params": groups[(role, no_decay)],
         "weight_decay": 0.0 if no_decay else weight_decay}
        for role, no_decay in order if (role, no_decay) in groups
    ]
