"""Fixtures of the recipe tests: tiny configs (a one-block ViT on 32x32 frames) and small real mp4 datasets.

Test modules import the fixtures they use from here. (Not a conftest.py: the core tests import ``conftest`` by name,
and a second conftest module would shadow theirs.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adaptkit.data import write_corrupt_video, write_synthetic_videos

# A tiny randomly initialised ViT: everything a recipe does, in a fraction of a second per step.
TINY_MODEL = [
    "model.kwargs.depth=1",
    "model.kwargs.embed_dim=32",
    "model.kwargs.num_heads=2",
    "train.num_threads=1",
    "train.log_every=1",
]


def _synthetic_overrides(run_dir: Path, steps: int = 2, classes: int = 4) -> list[str]:
    return ["--config", "synthetic_motion"] + TINY_MODEL + [
        f"train.output_dir={run_dir}",
        f"train.max_steps={steps}",
        "train.global_batch_size=4",
        "data.batch_size=4",
        f"data.synthetic.train_videos={4 * steps}",
        "data.synthetic.val_videos=8",
        f"data.synthetic.num_classes={classes}",
        "data.num_frames=4",
        "eval.batch_size=4",
    ]


VIDEO_CONFIG = """\
# python -m recipes.train --config {path}
name: tiny_videos
model:
  name: vit_tiny_patch16_224
  allow_random_init: true
  kwargs: {{img_size: 32, patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}}
  options: {{drop_path: 0.1}}
data:
  format: video_list
  train: {{annotations: {train}, root: {root}}}
  val: {{annotations: {val}, root: {root}}}
  num_frames: 4
  frame_interval: 2
  batch_size: 2
  num_workers: {workers}
  augment: {{crop_size: 32, resize_size: 36, scale: [0.5, 1.0], hflip: false}}
optim: {{lr: 1.0e-3, warmup_epochs: 0.5}}
train: {{epochs: 1, global_batch_size: 4, output_dir: {run_dir}, num_threads: 1, log_every: 1}}
eval: {{num_clips: 2, batch_size: 2, chunk_size: 3}}
"""


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 real mp4 files (4 motion classes, 12 frames of 32x32) in class folders, listed in list.txt."""
    folder = tmp_path_factory.mktemp("videos")
    write_synthetic_videos(folder, 12, num_frames=12, size=32, num_classes=4)
    return folder


@pytest.fixture
def video_dataset(video_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the videos plus one corrupt file listed in both splits; returns the folder."""
    folder = tmp_path / "videos"
    shutil.copytree(video_folder, folder)
    write_corrupt_video(folder / "broken.mp4", kind="truncated")
    lines = (folder / "list.txt").read_text().splitlines()
    (folder / "train.txt").write_text("\n".join(lines[:8] + ["broken.mp4 1"]) + "\n")
    (folder / "val.txt").write_text("\n".join(lines[8:] + ["broken.mp4 1"]) + "\n")
    return folder


@pytest.fixture
def synthetic_args():  # noqa: ANN201 - returns a function
    """``synthetic_args(run_dir, steps=2, classes=4)``: overrides shrinking the demo config to ``steps`` steps of 4
    clips with a one-block ViT, evaluated on 8 clips."""
    return _synthetic_overrides


@pytest.fixture
def video_config(video_dataset: Path, tmp_path: Path) -> Path:
    """A YAML config training a one-block ViT on ``video_dataset`` (corrupt file included) into tmp_path/run."""
    path = tmp_path / "tiny_videos.yaml"
    path.write_text(VIDEO_CONFIG.format(path=path, train=video_dataset / "train.txt", val=video_dataset / "val.txt",
                                        root=video_dataset, run_dir=tmp_path / "run", workers=0))
    return path
