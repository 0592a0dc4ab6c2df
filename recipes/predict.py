"""Print the top classes of one video file with a trained model.

    python -m recipes.predict --checkpoint runs/synthetic_motion/final my_video.mp4
    python -m recipes.predict --checkpoint runs/k400_vitb16_8x16/final my_video.mp4 --top-k 3 eval.num_clips=3

The video is read with the same test views as evaluation (the checkpoint's config: frames, sampling, temporal clips,
crops); the scores are the mean softmax over the views.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import adaptkit
from adaptkit.data import SKIPPED_LABEL, MultiViewDataset, VideoRecord, multi_view_scores, prepare_batch
from recipes._builders import create_image_model
from recipes._checkpoint import CONFIG_FILE, image_weights_in, read_classes
from recipes._config import load_config
from recipes._data import frame_sampler
from recipes._distributed import setup
from recipes._evaluation import autocast


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recipes.predict", description=__doc__.split("\n")[0])
    parser.add_argument("video", type=Path, help="video file (mp4, webm, mkv, ...)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="model folder (a run's final/ or a checkpoint)")
    parser.add_argument("--top-k", type=int, default=5, help="number of classes to print")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. eval.num_clips=1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    """Print and return the ``top_k`` (class name, probability) pairs, most likely first."""
    args = parse_args(argv)
    config = load_config(args.checkpoint / CONFIG_FILE, list(args.overrides))
    world = setup(config.train.device)  # picks the device; a single process
    classes = read_classes(args.checkpoint)

    image_model, _ = create_image_model(config.model, weights_file=image_weights_in(args.checkpoint))
    model = adaptkit.from_pretrained(image_model, args.checkpoint).to(world.device)

    # One video as a one-record evaluation dataset: decoded once, every test view in one tensor.
    augment = config.data.augment
    video = MultiViewDataset(
        [VideoRecord(str(args.video), 0, args.video.stem)],
        frame_sampler(config.data, num_clips=config.eval.num_clips, test_mode=True),
        crop_size=augment.crop_size, num_crops=augment.test_crops, resize_size=augment.test_resize_size,
        backend=config.data.decode_backend,
    )
    views, label, _ = video[0]  # uint8 (V, T, C, H, W)
    if label == SKIPPED_LABEL:
        path, reason = video.skipped()[0]
        raise SystemExit(f"cannot read {path}: {reason}")

    mean, std = model.normalization
    bf16 = config.train.precision == "bf16" or (config.train.precision == "auto" and world.device.type == "cuda")

    def forward(clips: torch.Tensor) -> torch.Tensor:
        with autocast(world.device, bf16):
            return model(clips)

    scores = multi_view_scores(forward, views.unsqueeze(0).to(world.device), lambda c: prepare_batch(c, mean, std),
                               config.eval.chunk_size)[0]  # (K,)
    top = scores.topk(min(args.top_k, len(classes)))
    predictions = [(classes[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
    print(f"{args.video} ({views.shape[0]} views of {views.shape[1]} frames):")
    for rank, (name, probability) in enumerate(predictions, start=1):
        print(f"  {rank}. {name:<40s} {100 * probability:6.2f}%")
    return predictions


if __name__ == "__main__":
    main()
