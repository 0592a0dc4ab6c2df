"""Materialise what an embedded config generates: the action videos (``data.source: generated``) and the pretrained
image backbone (``model.pretrain``). Both are cached under ``data.generated.cache_dir`` keyed by their settings, so
only the first run pays for them.

The result is an ordinary config: ``data.source: video`` with MMAction2 list files, and ``model.checkpoint`` naming
the backbone file, exactly what a user's own dataset and CLIP weights look like. Runs record this prepared config,
so evaluate and predict read the same files without preparing anything.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from adaptkit.data import ActionVideoSettings, build_frame_cache, generate_action_dataset
from adaptkit.io import atomic_directory
from recipes._data import load_split
from recipes._builders import check_model_name, checkpoint_file
from recipes._config import RecipeConfig, SplitConfig
from recipes._distributed import World, barrier
from recipes._pretrain import pretrain_image_model


def action_settings(config: RecipeConfig) -> ActionVideoSettings:
    """The generator settings named by ``data.generated`` (test-time sampling symmetric for ``data.num_frames``)."""
    generated = config.data.generated
    return ActionVideoSettings(
        train_videos=generated.train_videos, val_videos=generated.val_videos, size=generated.size,
        seed=generated.seed, min_seconds=generated.min_seconds, max_seconds=generated.max_seconds,
        mirror_clip_len=config.data.num_frames if config.data.sampling == "segment" else None,
    )


def _frame_cache(config: RecipeConfig, root: Path) -> Path:
    """Decode the generated videos once (the normal decoder) into a frame cache inside their folder, at the
    training transform's resize size; reused while ``index.json`` exists (written last, so a half-built cache is
    rebuilt). Without it, decoding a file per clip took 65-88% of the embedded run's CPU step time (measured)."""
    folder = root / f"frames-{config.data.augment.resize_size}-{config.data.decode_backend}"
    if (folder / "index.json").is_file():
        return folder
    records = [load_split(config.data, split, name).records for name, split in
               (("train", config.data.train), ("val", config.data.val))]
    # Built next to its final place, then renamed: a concurrent or interrupted build leaves no half cache.
    atomic_directory(folder, lambda staging: build_frame_cache(
        [r for split in records for r in split], staging, short_side=config.data.augment.resize_size,
        backend=config.data.decode_backend, progress=True, workers=min(2, os.cpu_count() or 1)))
    return folder


def prepare(config: RecipeConfig, device: torch.device, announce: bool = True) -> tuple[RecipeConfig, dict[str, Any]]:
    """Generate the videos and pretrain the backbone where the config asks for them (cached).

    Returns:
        The prepared config (a copy) and a report: ``{"videos": folder, "image_model": pretraining report}`` for
        the parts that were asked for.
    """
    config = copy.deepcopy(config)
    report: dict[str, Any] = {}
    if config.train.num_threads is not None:  # before pretraining, not only for the training run
        torch.set_num_threads(config.train.num_threads)
    data, model = config.data, config.model
    checkpoint_file(model)  # a wrong path or model name is reported before minutes of generating
    check_model_name(model.name, model.source)
    if data.source == "generated":
        dataset = generate_action_dataset(action_settings(config), data.generated.cache_dir,
                                          workers=min(2, os.cpu_count() or 1))
        data.source, data.format = "video", "video_list"
        data.options = {**data.options, "classes": list(dataset.classes)}
        data.train = SplitConfig(str(dataset.train_list), str(dataset.root))
        data.val = SplitConfig(str(dataset.val_list), str(dataset.root))
        report["videos"] = str(dataset.root)
        if data.generated.frame_cache and data.frame_cache is None:
            data.frame_cache = str(_frame_cache(config, dataset.root))
        if announce:
            print(f"generated videos: {dataset.root} ({data.generated.train_videos} train, "
                  f"{data.generated.val_videos} held out, {len(dataset.classes)} classes in time-reversed pairs)")
    if model.pretrain is not None and model.checkpoint is None:
        architecture = model.name.partition(".")[0]
        size = config.data.augment.crop_size
        path, image_report = pretrain_image_model(architecture, dict(model.kwargs), model.pretrain, size,
                                                  data.generated.cache_dir, device)
        model.checkpoint = str(path)
        model.kwargs = {**model.kwargs, "num_classes": image_report["kwargs"]["num_classes"]}  # the checkpoint's head
        report["image_model"] = image_report
        if announce:
            print(f"pretrained image model: {path} (shape x colour x place top-1 "
                  f"{100 * image_report['image_top1']:.1f}% on {image_report['test_images']} held-out images, "
                  f"chance {100 * image_report['chance']:.1f}%)")
    return config, report


def prepare_everywhere(config: RecipeConfig, world: World) -> RecipeConfig:
    """:func:`prepare` on every process: the main one generates and pretrains (announcing it), the others then find
    the results in the cache."""
    if world.is_main:
        config, _ = prepare(config, world.device)
    barrier(world)
    if not world.is_main:
        config, _ = prepare(config, world.device, announce=False)
    return config
