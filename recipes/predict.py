"""Print the top classes of one video file with a trained model.

    adaptkit predict my_video.mp4 --checkpoint runs/synthetic_motion/final
    adaptkit predict my_video.mp4 --checkpoint runs/k400_vitb16_8x16/final --top-k 3 eval.num_clips=3
    adaptkit predict my_video.mp4 --checkpoint my_adapter --config k400_vitb16_8x16 --classes classes.txt

The video is read with the sampling the model was trained with and the test views of evaluation (the checkpoint's
config: frames, dense or segment sampling, temporal clips, crops), and the command says which frames it read. The
scores are the mean softmax over the views. A plain ``save_pretrained`` folder (no run config) works when
``--config`` names the image model and the sampling; ``--classes`` then gives the class names. The strategy and its
options are the folder's own (its ``adapter_config.json``): an override of them that differs is refused.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from adaptkit.data import (
    MultiViewDataset,
    VideoDecodeError,
    VideoRecord,
    count_frames,
    multi_view_scores,
    prepare_batch,
)
from recipes._args import ArgumentParser, UsageError
from recipes._builders import check_crop_size
from recipes._checkpoint import (
    CONFIG_FILE,
    check_model_dir,
    load_image_model,
    load_model_dir,
    read_classes,
    refuse_option_overrides,
    refuse_strategy_overrides,
)
from recipes._config import DataConfig, load_config
from recipes._data import frame_sampler
from recipes._distributed import setup
from recipes._embedded import prepare
from recipes._evaluation import autocast


def parse_args(argv: list[str] | None, prog: str = "adaptkit predict") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("items", nargs="*", metavar="VIDEO [key=value ...]",
                        help="the video file (mp4, webm, mkv, ...), then config overrides, e.g. eval.num_clips=1")
    parser.add_argument("--checkpoint", required=True, type=Path, help="model folder (a run's final/ or a checkpoint)")
    parser.add_argument("--config", help="config name or YAML for a folder without config.yaml (default: the "
                                         "checkpoint's own)")
    parser.add_argument("--classes", type=Path, help="class names (JSON list, or one per line); needed for a folder "
                                                     "without classes.json, used instead of it otherwise")
    parser.add_argument("--top-k", type=int, default=5, help="number of classes to print")
    args = parser.parse_intermixed_args(argv)
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    videos = [item for item in args.items if Path(item).exists() or "=" not in item]
    if not videos:
        raise UsageError(f"the video to predict on is missing: {prog} VIDEO --checkpoint MODEL_FOLDER")
    if len(videos) > 1:
        raise UsageError(f"one video at a time, got {videos}")
    args.video = Path(videos[0])
    args.overrides = [item for item in args.items if item != videos[0]]
    return args


def read_class_names(path: Path) -> list[str]:
    """Class names from ``path``: a JSON list, a JSON object of name -> index (SSv2's ``labels.json``), or a text
    file with one name per line.

    Raises:
        ValueError: naming ``--classes`` and the formats it takes, for anything else.
    """
    text = path.read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()] if path.suffix != ".json" else _json_names(
        path, text)
    if not names:
        raise ValueError(f"--classes {path} names no classes")
    return names


def _json_names(path: Path, text: str) -> list[str]:
    expected = "expected a JSON list of class names or a JSON object of name -> index (as SSv2's labels.json)"
    try:
        names = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--classes {path} is not valid JSON ({error.msg}, line {error.lineno}); {expected}") from None
    if isinstance(names, dict):
        if not all(isinstance(i, int) and not isinstance(i, bool) or isinstance(i, str) and i.strip().isdigit()
                   for i in names.values()):
            raise ValueError(f"--classes {path}: an index is not an integer; {expected}")
        index = {int(i): str(name) for name, i in names.items()}
        if sorted(index) != list(range(len(names))):
            raise ValueError(f"--classes {path}: the indices are not 0..{len(names) - 1}, each once; {expected}")
        names = [index[i] for i in range(len(index))]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"--classes {path}: {expected}")
    return names


def describe_sampling(data: DataConfig, indices: np.ndarray, length: int) -> str:
    """Which frames a prediction reads, e.g. ``3 clips of 8 frames every 16 (dense sampling), frames 0-299``."""
    num_clips, clip_len = indices.shape
    how = f"every {data.frame_interval} (dense sampling)" if data.sampling == "dense" else "(segment sampling)"
    clips = f"{num_clips} clip{'s' if num_clips > 1 else ''} of {clip_len} frames {how}"
    return f"{clips}, frames {int(indices.min())}-{int(indices.max())} of {length}"


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    """Print and return the ``top_k`` (class name, probability) pairs, most likely first."""
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would print the same prediction
        raise UsageError("predict reads one video in one process: run it without torchrun")
    check_model_dir(args.checkpoint, config_given=args.config is not None)
    if args.classes is not None and not args.classes.is_file():
        raise FileNotFoundError(f"--classes {args.classes} is not a file (expected a JSON list or one class name "
                                "per line)")
    names = read_class_names(args.classes) if args.classes is not None else None  # before the minutes of loading
    video_path: Path = args.video
    if not video_path.exists():
        raise FileNotFoundError(f"video {video_path} does not exist")
    if video_path.is_dir():
        raise IsADirectoryError(f"{video_path} is a folder, not a video file: predict reads one file "
                                "(`adaptkit evaluate` scores a whole annotated dataset)")
    refuse_strategy_overrides(args.checkpoint, args.overrides)  # the model folder's, not the config's
    config = load_config(args.config or args.checkpoint / CONFIG_FILE, list(args.overrides))
    refuse_option_overrides(args.checkpoint, config, args.overrides)
    world = setup(config.train.device)  # picks the device; a single process
    config, _ = prepare(config, world.device, announce=False)  # generated data / an embedded backbone, if asked for

    image_model, weights = load_image_model(config.model, args.checkpoint, args.config is not None)
    model = load_model_dir(image_model, args.checkpoint, args.config is not None, weights).to(world.device)
    check_crop_size(model, config.data.augment.crop_size)
    classes = names if names is not None else read_classes(args.checkpoint)
    classes = classes or config.data.options.get("classes")  # a config that names them (e.g. generated data)
    classes = classes or [f"class_{i}" for i in range(model.num_classes)]
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} classes")

    # The model's own sampling, in test mode (deterministic); said out loud, with a note when frames repeat.
    sampler = frame_sampler(config.data, num_clips=config.eval.num_clips, test_mode=True)
    try:
        length = count_frames(video_path, config.data.decode_backend)
    except VideoDecodeError as error:
        raise ValueError(f"cannot read {video_path}: {error.reason}") from None
    indices = sampler(length)  # (clips, T)
    augment = config.data.augment
    video = MultiViewDataset(
        [VideoRecord(str(video_path), 0, video_path.stem)], sampler, crop_size=augment.crop_size,
        num_crops=augment.test_crops, resize_size=augment.test_resize_size, backend=config.data.decode_backend,
    )
    try:  # not video[0]: it would log the failure as a skipped video, a second line about the same file
        views = video.views(0)  # uint8 (V, T, C, H, W)
    except VideoDecodeError as error:  # e.g. a file whose frames were counted but fail to decode part-way
        raise ValueError(f"cannot read {video_path}: {error.reason}") from None

    mean, std = model.normalization
    bf16 = config.train.precision == "bf16" or (config.train.precision == "auto" and world.device.type == "cuda")

    def forward(clips: torch.Tensor) -> torch.Tensor:
        with autocast(world.device, bf16):
            return model(clips)

    scores = multi_view_scores(forward, views.unsqueeze(0).to(world.device), lambda c: prepare_batch(c, mean, std),
                               config.eval.chunk_size)[0]  # (K,)
    top = scores.topk(min(args.top_k, len(classes)))
    predictions = [(classes[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
    crops = f" x {augment.test_crops} crops" if augment.test_crops > 1 else ""
    print(f"{video_path}: read {describe_sampling(config.data, indices, length)}{crops}, "
          f"{augment.crop_size}x{augment.crop_size} ({views.shape[0]} view{'s' if views.shape[0] > 1 else ''})")
    if any(len(np.unique(clip)) < len(clip) for clip in indices):
        frames = f"{length} frame{'s' if length != 1 else ''}"
        print(f"  note: the video has only {frames}, fewer than a clip spans: frames were repeated")
    for rank, (name, probability) in enumerate(predictions, start=1):
        print(f"  {rank}. {name:<40s} {100 * probability:6.2f}%")
    return predictions


if __name__ == "__main__":  # python -m recipes.predict: the same as `adaptkit predict`
    import sys

    from recipes.cli import main as cli

    raise SystemExit(cli(["predict", *sys.argv[1:]]))
