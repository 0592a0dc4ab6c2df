"""Pretrain a small timm image model on generated still images: the embedded stand-in for ImageNet / CLIP weights.

AIM adapts a *pretrained* image model, so the embedded benchmark needs one that fits a CPU budget. The images
(:func:`adaptkit.data.shapes.shape_images`: a shape of a colour on a blob-textured background) come from another
distribution than the action videos (no motion, other backgrounds, no distractors); the task is to name the shape,
its colour and where it is (``model.pretrain.position_grid``: a 3 x 3 grid by default, 324 classes). Naming the place
keeps position in the features, as ImageNet / CLIP features keep it; with shape x colour alone, AIM recognised which
action a generated video shows far less often (measured: 65-88% against 93-99%, README). The result is an ordinary
timm checkpoint (the model's ``state_dict`` as safetensors), loaded back like any user's weights through
``model.checkpoint``, and cached under a hash of everything that decides it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recipes._files import atomic_write, atomic_write_text
from adaptkit.data import COLOURS, SHAPES, shape_images
from recipes._config import PretrainConfig

PRETRAIN_VERSION = 2  # bump when the images or the training loop change: part of the cache key
WEIGHTS_FILE = "model.safetensors"
REPORT_FILE = "pretrain.json"


def pretrain_key(architecture: str, kwargs: dict[str, Any], config: PretrainConfig, size: int) -> str:
    text = json.dumps({"version": PRETRAIN_VERSION, "architecture": architecture, "kwargs": kwargs, "size": size,
                       **dataclasses.asdict(config)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def num_image_classes(config: PretrainConfig) -> int:
    """Shapes x colours x grid cells."""
    return len(SHAPES) * len(COLOURS) * config.position_grid**2


def image_class_names(config: PretrainConfig) -> list[str]:
    """Label order of :func:`adaptkit.data.shape_images`: ``"<shape> <colour> r<row>c<column>"``."""
    g = config.position_grid
    places = [f" r{i // g}c{i % g}" if g > 1 else "" for i in range(g * g)]
    return [f"{s} {c}{place}" for s in SHAPES for c in COLOURS for place in places]


def _model_kwargs(kwargs: dict[str, Any], config: PretrainConfig) -> dict[str, Any]:
    return {**kwargs, "num_classes": num_image_classes(config)}


@torch.no_grad()
def image_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 of ``model`` on uint8 (N, 3, H, W) images (ImageNet normalisation, the model's default)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(_normalise(images[start:start + batch_size], model))
        correct += (logits.argmax(1) == labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


def _normalise(images: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg["mean"], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def pretrain_image_model(
    architecture: str, kwargs: dict[str, Any], config: PretrainConfig, size: int, cache_dir: str | Path,
    device: torch.device | str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Train (or find in the cache) the image model; returns the checkpoint path and its report.

    Args:
        architecture: timm architecture name, without a pretrained tag.
        kwargs: timm ``create_model`` arguments (``img_size`` must equal ``size``); ``num_classes`` is set to
            :func:`num_image_classes`.
        config: pretraining settings.
        size: image side in pixels.
        cache_dir: the checkpoint goes to ``cache_dir/image-<hash>/model.safetensors`` with ``pretrain.json``.
        device: where to train.

    Returns:
        The checkpoint path and the report: held-out accuracy, chance, seconds, settings.
    """
    import timm
    from safetensors.torch import save_file

    folder = Path(cache_dir) / f"image-{pretrain_key(architecture, kwargs, config, size)}"
    weights, report_path = folder / WEIGHTS_FILE, folder / REPORT_FILE
    if weights.is_file() and report_path.is_file():
        return weights, json.loads(report_path.read_text())
    started = time.perf_counter()
    device = torch.device(device)
    # Local generators: the caller's RNG state (its seeds) is left untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = timm.create_model(architecture, pretrained=False, **_model_kwargs(kwargs, config)).to(device)
        test_images, test_labels = shape_images(np.random.default_rng([config.seed, 1]), config.test_images, size,
                                                config.position_grid)
        test_x, test_y = torch.from_numpy(test_images).to(device), torch.from_numpy(test_labels).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup = max(1, config.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
            1 + math.cos(math.pi * min(max(s - warmup, 0) / max(config.steps - warmup, 1), 1.0)))))
        rng = np.random.default_rng([config.seed, 0])
        bar = tqdm(range(config.steps), desc="pretrain image model", unit="step", dynamic_ncols=True)
        for step in bar:
            images, labels = shape_images(rng, config.batch_size, size, config.position_grid)
            x, y = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
            loss = F.cross_entropy(model(_normalise(x, model)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 20 == 0 or step == config.steps - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        accuracy = image_accuracy(model, test_x, test_y)
    report = {"architecture": architecture, "kwargs": _model_kwargs(kwargs, config), "size": size,
              "pretrain": dataclasses.asdict(config), "image_top1": accuracy, "chance": 1 / num_image_classes(config),
              "classes": image_class_names(config), "test_images": config.test_images,
              "seconds": round(time.perf_counter() - started, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")  # written last: marks the cache complete
    return weights, report
