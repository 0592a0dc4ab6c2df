"""Several named adapter sets on one frozen backbone: PEFT's add_adapter / set_adapter / delete_adapter model.

The public methods are :class:`~adaptkit.VideoModel`'s; this module holds their bodies.

A set is everything a strategy adds around the frozen image model: its block wrappers, trainable
copies of norms, temporal embedding and classification head, plus its options. One set is active
(attached to the backbone); the others are detached and kept, with their tensors, in
``video_model.adapter_sets``. Switching detaches one set and attaches another: the frozen blocks are
shared, so the active set computes exactly what a model built with that set alone computes.
"""

from __future__ import annotations

import dataclasses
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from adaptkit.errors import StrategyOptionError, UnsupportedBackboneError, retyped
from adaptkit.strategies.base import StrategyConfig, VideoBlock

if TYPE_CHECKING:
    from adaptkit.model import VideoModel


@dataclasses.dataclass
class SetInfo:
    """What a detached set needs besides its modules."""

    strategy: StrategyConfig
    num_classes: int | None
    copy_paths: list[str]
    requires_grad: dict[str, bool]  # the set's own flags, restored when it is attached again
    tensor_names: set[str]  # what the set saves (VideoModel.trainable_state_dict), named as when active


class DetachedSet(nn.Module):
    """The modules of one inactive set. Block wrappers are stored without their frozen block."""

    def __init__(self, head: nn.Module, head_drop: nn.Module, temporal_embed: nn.Module | None) -> None:
        super().__init__()
        self.head = head
        self.head_drop = head_drop
        self.temporal_embed = temporal_embed
        self.wrappers = nn.ModuleDict()  # str(block index) -> VideoBlock with .block = None
        self.copies = nn.ModuleDict()  # path with "." as "__" -> trainable copy


def check_shareable(video_model: VideoModel) -> None:
    """Raise unless the active set leaves the frozen backbone untouched (so another set can share it)."""
    strategy = video_model.strategy
    restore = video_model._restore
    changed = restore.strategy_state is not None or video_model.merged or any(
        p.requires_grad for p in video_model.backbone.parameters() if id(p) in restore.original_params)
    if changed:
        raise TypeError(
            f"strategy {strategy.name!r} changes the backbone itself (its weights train, it is merged, or it rewires "
            f"modules inside the blocks), so it cannot share one frozen backbone with other adapter sets. A strategy "
            f"can when its apply() returns None and trains no backbone weight (built in: aim, st-adapter, zero-i2v "
            f"unmerged, linear-probe)"
        )


def detach(video_model: VideoModel) -> tuple[DetachedSet, SetInfo]:
    """Take the active set off the backbone, leaving the plain frozen image model inside (heads still dropped)."""
    restore, backbone = video_model._restore, video_model.backbone
    detached = DetachedSet(video_model.head, video_model.head_drop, video_model.temporal_embed)
    blocks = video_model.family.blocks()
    for i, block in enumerate(blocks):
        if isinstance(block, VideoBlock):
            blocks[i] = block.block
            block.block = None
            detached.wrappers[str(i)] = block
    for path in restore.trainable_copies:
        detached.copies[path.replace(".", "__")] = _get(backbone, path)
        _set(backbone, path, restore.stashed.pop(path))
    info = SetInfo(video_model.strategy, video_model.num_classes, list(restore.trainable_copies),
                   {name: p.requires_grad for name, p in detached.named_parameters()},
                   video_model._adapter_tensor_names)
    detached.requires_grad_(False)  # as in PEFT, only the active set trains
    restore.trainable_copies = []
    return detached, info


def attach(video_model: VideoModel, detached: DetachedSet, info: SetInfo) -> None:
    """Put a detached set back on the backbone and make it the video model's active set."""
    restore, backbone = video_model._restore, video_model.backbone
    for name, param in detached.named_parameters():
        param.requires_grad_(info.requires_grad[name])
    blocks = video_model.family.blocks()
    for key, wrapper in detached.wrappers.items():
        wrapper.block = blocks[int(key)]
        blocks[int(key)] = wrapper
    for path in info.copy_paths:
        restore.stashed[path] = _get(backbone, path)
        _set(backbone, path, detached.copies[path.replace(".", "__")])
    restore.trainable_copies = list(info.copy_paths)
    video_model.head, video_model.head_drop = detached.head, detached.head_drop
    video_model.temporal_embed = detached.temporal_embed
    video_model.strategy, video_model.num_classes = info.strategy, info.num_classes
    video_model._adapter_tensor_names = info.tensor_names


def _get(root: nn.Module, path: str) -> Any:
    return operator.attrgetter(path)(root)


def _set(root: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(operator.attrgetter(parent_path)(root) if parent_path else root, attr, value)


def add_adapter(
    video_model: VideoModel, name: str, strategy: str = "aim", num_classes: int | None = None, **options: Any
) -> None:
    """See :meth:`VideoModel.add_adapter <adaptkit.VideoModel.add_adapter>`."""
    from adaptkit.strategies import make_strategy

    video_model._require_loaded("add an adapter set")
    if not isinstance(name, str) or not name or "." in name or name in video_model.adapter_names:
        raise ValueError(f"adapter name {name!r} is taken or invalid; sets: {video_model.adapter_names}")
    if "num_frames" in options:  # not a strategy option: the clip length belongs to the backbone all sets share
        raise StrategyOptionError(f"adapter sets share the model's num_frames={video_model.num_frames}; add_adapter "
                                  "takes no num_frames (inject the image model again for another clip length)")
    config = make_strategy(strategy, options)
    check_shareable(video_model)
    num_classes = video_model.num_classes if num_classes is None else num_classes
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    active, info = detach(video_model)
    try:
        video_model._restore.applied, video_model._restore.strategy_state = False, None
        with retyped(UnsupportedBackboneError):
            config.check_backbone(video_model.family)  # on the plain blocks, not the active set's wrappers
        video_model._build_set(config, num_classes)
        check_shareable(video_model)
    except BaseException:
        if video_model._restore.applied and video_model._restore.strategy_state is not None:
            video_model.strategy.remove(video_model._context(), video_model._restore.strategy_state)
        for param in video_model.backbone.parameters():
            param.requires_grad_(False)
        detach(video_model)  # discard what was built
        video_model._restore.applied, video_model._restore.strategy_state = True, None
        attach(video_model, active, info)
        raise
    new, new_info = detach(video_model)
    attach(video_model, active, info)
    video_model.adapter_sets[name], video_model._set_info[name] = new, new_info
    video_model.train(video_model.training)


def set_adapter(video_model: VideoModel, name: str) -> None:
    """See :meth:`VideoModel.set_adapter <adaptkit.VideoModel.set_adapter>`."""
    if name == video_model.active_adapter:
        return
    if name not in video_model.adapter_sets:
        raise KeyError(f"no adapter set {name!r}; sets: {video_model.adapter_names}")
    active, info = detach(video_model)
    attach(video_model, video_model.adapter_sets.pop(name), video_model._set_info.pop(name))
    previous = video_model.active_adapter
    video_model.adapter_sets[previous], video_model._set_info[previous] = active, info
    video_model.active_adapter = name
    video_model.train(video_model.training)


def delete_adapter(video_model: VideoModel, name: str) -> None:
    """See :meth:`VideoModel.delete_adapter <adaptkit.VideoModel.delete_adapter>`."""
    if name == video_model.active_adapter:
        raise ValueError(f"adapter set {name!r} is active; set_adapter() another one before deleting it")
    if name not in video_model.adapter_sets:
        raise KeyError(f"no adapter set {name!r}; sets: {video_model.adapter_names}")
    del video_model.adapter_sets[name]
    del video_model._set_info[name]


def load_adapter(
    video_model: VideoModel, path: str | Path, name: str, ignore_architecture_mismatch: bool = False,
    is_trainable: bool = False,
) -> None:
    """See :meth:`VideoModel.load_adapter <adaptkit.VideoModel.load_adapter>`."""
    from adaptkit.checkpoint import (
        compare_architecture,
        compare_frozen_weights,
        frozen_weights_fingerprint,
        load_trainable,
        read_config,
    )

    video_model._require_loaded("load an adapter set")
    config = read_config(path)
    compare_architecture(config["backbone"], video_model.architecture, path, ignore_architecture_mismatch)
    if config["num_frames"] != video_model.num_frames:
        raise ValueError(
            f"{path} was saved for {config['num_frames']} frames; this model's sets use {video_model.num_frames}"
        )
    if config.get("merged"):
        raise TypeError(f"{path} holds a merged model (its own backbone weights): load it with from_pretrained")
    video_model.add_adapter(name, config["strategy"], config["num_classes"], **config["options"])
    active = video_model.active_adapter
    video_model.set_adapter(name)
    try:
        compare_frozen_weights(config.get("frozen_weights"), frozen_weights_fingerprint(video_model), path)
        load_trainable(video_model, path, config)
    except BaseException:
        video_model.set_adapter(active)
        video_model.delete_adapter(name)
        raise
    if not is_trainable:  # PEFT's load_adapter: frozen unless asked; the flags travel with the set
        for tensor in video_model.trainable_state_dict().values():
            tensor.requires_grad_(False)
    video_model.set_adapter(active)
