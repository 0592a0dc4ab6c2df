"""The training recipe end to end through ``main(argv)``: synthetic data, real mp4 files, resume, logs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe_fixtures import synthetic_args, video_config, video_dataset, video_folder  # noqa: F401 - pytest fixtures
from recipes import train
from recipes._checkpoint import list_checkpoints, load_state


def adapter(run_dir: Path, folder: str = "final") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / folder / "adapter_model.safetensors"))


def test_two_steps_on_synthetic_data(tmp_path: Path, synthetic_args, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    summary = train.main(synthetic_args(run_dir))
    out = capsys.readouterr().out
    assert "trainable params: " in out and " || all params: " in out and " || trainable%: " in out
    assert summary["step"] == summary["total_steps"] == 2 and not summary["stopped"]
    assert "chance 25.0%" in out and "no videos skipped" in out
    assert "top-5" not in out  # 4 classes: top-5 would always be 100%
    # The banner names the architecture built (the config's model name is a full-size ViT shrunk by model.kwargs).
    assert "backbone vit_tiny_patch16_224 (depth 1, width 32, patch 8, 32x32 input) (random init), strategy aim" in out
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.yaml", "classes.json",
                 "image_model.safetensors"):
        assert (run_dir / "final" / name).is_file(), name
    result = json.loads((run_dir / "eval_result.json").read_text())
    assert result["num_videos"] == 8 and len(result["video_ids"]) == 8 and result["views"] == "4x1x1"
    assert 0 <= result["top1"] <= result["top5"] <= 1
    # Only trainable tensors are saved, and training changed them (the head starts random, adapters at zero).
    saved = adapter(run_dir)
    assert saved and all(not k.startswith("backbone.blocks.0.block.") for k in saved)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert {"loss", "lr", "clips_per_s", "epoch"} <= set(records[0])
    assert [r["kind"] for r in records][-1] == "eval"
    with open(run_dir / "train.csv") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["1", "2"]


@pytest.mark.parametrize("workers", [0, 2])
def test_real_videos_with_a_corrupt_file(
    video_config: Path, video_dataset: Path, workers: int, capsys: pytest.CaptureFixture
) -> None:
    # With workers the skip is seen in a worker process and must still reach the summary.
    summary = train.main(["--config", str(video_config), "train.max_steps=3", f"data.num_workers={workers}"])
    out = capsys.readouterr().out
    assert summary["step"] == 3
    broken = str(video_dataset / "broken.mp4")
    assert [path for path, _ in summary["skipped_train"]] == [broken]
    assert "skipped 1 videos" in out and broken in out
    assert f"evaluation data: 1 videos left out (missing or unreadable):\n  {broken} (corrupt or truncated)" in out
    result = json.loads((Path(summary["run_dir"]) / "eval_result.json").read_text())
    assert result["skipped_ids"] == ["broken"] and result["num_videos"] == 4 and "broken" not in result["video_ids"]
    assert result["extra"]["skipped"] == summary["eval"]["extra"]["skipped"] == [[broken, "corrupt or truncated"]]
    assert result["views"] == "4x2x1"


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path, synthetic_args) -> None:
    args = synthetic_args(tmp_path / "run", steps=2) + ["data.batch_size=2", "train.max_steps=null",
                                                        "data.synthetic.train_videos=9", "eval.at_end=false"]
    summary = train.main(args)
    # 9 clips, 4 per optimizer step (2 x 2 accumulated): 2 steps per epoch, one epoch.
    assert summary["total_steps"] == summary["step"] == 2
    state = load_state(list_checkpoints(tmp_path / "run")[-1])
    assert state["steps_per_epoch"] == 2 and state["global_batch_size"] == 4


def test_a_missing_training_video_is_left_out_and_listed_in_the_summary_across_resume(
    video_config: Path, video_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    gone = video_dataset / (video_dataset / "train.txt").read_text().split()[0]
    gone.unlink()
    args = ["--config", str(video_config), "data.max_missing_fraction=0.2", "train.global_batch_size=2",
            "data.batch_size=2", "eval.at_end=false", "train.checkpoint_every=1"]
    stopped = train.main([*args, "train.max_steps=2", "train.stop_at_step=1"])
    assert stopped["stopped"] and stopped["skipped_train"][0] == [str(gone), "missing"]
    summary = train.main([*args, "train.max_steps=2", "--resume"])
    broken = str(video_dataset / "broken.mp4")
    assert sorted(map(tuple, summary["skipped_train"])) == sorted([(str(gone), "missing"),
                                                                   (broken, "corrupt or truncated")])
    assert f"  {gone} (missing)" in capsys.readouterr().out


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, synthetic_args) -> None:
    def args(run: str) -> list[str]:
        return synthetic_args(tmp_path / run, steps=6) + [
            "data.synthetic.train_videos=12",  # 3 steps per epoch: the interruption falls inside epoch 2
            "model.options.drop_path=0.2",  # randomness in the step: the RNG state must be restored too
            "train.checkpoint_every=2", "eval.at_end=false",
        ]

    straight = train.main(args("straight"))
    stopped = train.main(args("resumed") + ["train.stop_at_step=4"])
    assert stopped["stopped"] and stopped["step"] == 4
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["step_00000002", "step_00000004"]
    assert not (tmp_path / "resumed" / "final").exists()
    with pytest.raises(FileExistsError, match="--resume"):  # neither resume nor overwrite: do not clobber the run
        train.main(args("resumed") + ["train.overwrite=false"])
    checkpointed = load_state(list_checkpoints(tmp_path / "resumed")[-1])["wall_time_s"]
    resumed = train.main(args("resumed") + ["--resume"])
    assert resumed["step"] == straight["step"] == 6
    # The total wall time includes the first start's time up to the step-4 checkpoint.
    assert straight["wall_time_total_s"] == straight["wall_time_s"]
    assert 0 < checkpointed <= stopped["wall_time_s"] + 0.05
    assert resumed["wall_time_total_s"] == pytest.approx(resumed["wall_time_s"] + checkpointed, abs=0.11)
    expected, got = adapter(tmp_path / "straight"), adapter(tmp_path / "resumed")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    log = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]
    # The kept rows keep the csv module's line endings: one style in the file, as in the uninterrupted run's.
    table = (tmp_path / "resumed" / "train.csv").read_bytes()
    assert table.count(b"\n") == table.count(b"\r\n") == 7


def test_a_log_window_cut_by_a_stop_is_logged_whole_after_the_resume(tmp_path: Path, synthetic_args) -> None:
    """The checkpoint at step 3 carries the open window (steps 1-3): the resumed run logs step 4 over steps 1-4, as
    the uninterrupted run does, and no extra row at the stop."""
    def rows(run: str, *extra: str) -> list[tuple[int, float, float]]:
        train.main(synthetic_args(tmp_path / run, steps=6) + ["train.log_every=4", "eval.at_end=false", *extra])
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"], r["lr"]) for r in map(json.loads, lines) if r["kind"] == "train"]

    straight = rows("straight")
    assert [step for step, _, _ in straight] == [4, 6]
    assert rows("resumed", "train.stop_at_step=3") == []
    assert rows("resumed", "--resume") == straight


def test_resume_with_a_dataloader_worker_matches_an_uninterrupted_run(tmp_path: Path, video_config: Path) -> None:
    # Real videos through VideoClipDataset with random crops and flips drawn in a worker process: each clip's
    # randomness must be a function of (seed, epoch, index), not of the worker's RNG history.
    def args(run: str) -> list[str]:
        return ["--config", str(video_config), f"train.output_dir={tmp_path / run}", "data.num_workers=1",
                "train.max_steps=5", "train.checkpoint_every=2", "eval.at_end=false",
                "data.augment.hflip=true", "data.augment.scale=[0.2,1.0]"]

    straight = train.main(args("straight"))
    assert train.main(args("resumed") + ["train.stop_at_step=3"])["stopped"]
    resumed = train.main(args("resumed") + ["--resume"])
    assert resumed["step"] == straight["step"] == 5
    expected, got = adapter(tmp_path / "straight"), adapter(tmp_path / "resumed")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_checkpoint_state_loads_without_pickled_code(tmp_path: Path, synthetic_args) -> None:
    train.main(synthetic_args(tmp_path / "run") + ["eval.at_end=false"])
    checkpoint = list_checkpoints(tmp_path / "run")[-1]
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert state["step"] == 2 and state["optimizer"]["state"] and len(state["rng"]) == 1
    assert not list(checkpoint.parent.glob(".tmp_*"))  # written under a temporary name, then renamed


def test_periodic_evaluation_every_epoch(tmp_path: Path, synthetic_args) -> None:
    summary = train.main(synthetic_args(tmp_path / "run") + [
        "train.max_steps=null", "train.epochs=3", "data.synthetic.train_videos=4", "eval.every_epochs=1"])
    assert summary["step"] == 3
    with open(tmp_path / "run" / "eval.csv") as file:
        assert [row["step"] for row in csv.DictReader(file)] == ["1", "2", "3"]


def test_bf16_autocast_and_gradient_checkpointing(tmp_path: Path, synthetic_args) -> None:
    summary = train.main(synthetic_args(tmp_path / "run") + ["train.precision=bf16", "model.grad_checkpointing=true"])
    assert summary["step"] == 2
    losses = [json.loads(line).get("loss") for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(loss is None or 0 < loss < 10 for loss in losses)


def test_torch_compile_option(tmp_path: Path, synthetic_args) -> None:
    summary = train.main(synthetic_args(tmp_path / "run") + ["model.compile=true", "eval.at_end=false"])
    assert summary["step"] == 2 and len(summary["adapter_sha256_per_rank"]) == 1


def test_resume_after_a_real_kill(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    args = synthetic_args(run_dir, steps=400) + ["train.checkpoint_every=20", "train.log_every=5", "eval.at_end=false"]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    process = subprocess.Popen([sys.executable, "-m", "recipes.train", *args], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(run_dir) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.kill()  # SIGKILL: no cleanup, possibly in the middle of a step or of writing a checkpoint
    finally:
        process.wait()
    killed_at = load_state(list_checkpoints(run_dir)[-1])["step"]
    assert 0 < killed_at < 400 and not (run_dir / "final").exists()
    summary = train.main(args + ["--resume"])
    assert summary["step"] == summary["total_steps"] == 400
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 401, 5))  # records of the killed run after its checkpoint were dropped


def test_incomplete_checkpoints_are_ignored(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    train.main(synthetic_args(run_dir) + ["train.checkpoint_every=1", "eval.at_end=false"])
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000001", "step_00000002"]
    (run_dir / "checkpoints" / ".tmp_step_00000003").mkdir()  # a write cut short by a kill
    (run_dir / "checkpoints" / "step_00000009").mkdir()  # no training state: not a checkpoint
    assert list_checkpoints(run_dir)[-1].name == "step_00000002"


@pytest.mark.slow
def test_the_synthetic_demo_learns_the_direction_of_motion(tmp_path: Path) -> None:
    """The full toy demo (~1.5 min on 2 cores): only the run folder differs from
    `adaptkit train --config synthetic_motion`.

    A model blind to frame order cannot beat 50% here (a clip played backwards is the opposite class); the demo
    measured 99.4-100% over seeds (chance 25%)."""
    summary = train.main(["--config", "synthetic_motion", f"train.output_dir={tmp_path / 'run'}"])
    assert summary["step"] == 1000 and summary["eval"]["num_videos"] == 512
    assert summary["eval"]["top1"] >= 0.6


@pytest.mark.parametrize("augment", [
    # SSv2-style: segment sampling, RandAugment, random erasing on the device, label smoothing, no flip.
    ["data.sampling=segment", "data.augment.randaugment=true", "data.augment.random_erasing_p=1.0",
     "data.augment.label_smoothing=0.1"],
    # MixUp / CutMix on the device batch, colour jitter in the workers.
    ["data.augment.mixup_alpha=0.8", "data.augment.cutmix_alpha=1.0", "data.augment.color_jitter=0.4"],
], ids=["ssv2_style", "mixup_cutmix"])
def test_augmentation_paths_on_real_videos(video_config: Path, augment: list[str]) -> None:
    summary = train.main(["--config", str(video_config), "train.max_steps=2", "eval.at_end=false", *augment])
    assert summary["step"] == 2
    log = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in log]
    assert all(0 < loss < 10 for loss in losses)


def test_overwriting_a_finished_run_says_so(tmp_path: Path, synthetic_args, capsys: pytest.CaptureFixture) -> None:
    args = synthetic_args(tmp_path / "run", steps=1) + ["eval.at_end=false", "train.overwrite=true"]
    train.main(args)
    assert "train.overwrite" not in capsys.readouterr().err  # nothing to replace the first time
    train.main(args)  # the recipe's logging writes to stderr (it replaces the root handlers)
    assert (f"WARNING recipes.train: train.overwrite is true: removed checkpoints, final, train_summary.json of the "
            f"previous run in {tmp_path / 'run'} and started again") in capsys.readouterr().err
    # A re-run stopped early leaves its own summary, not the finished run's.
    stopped = train.main(synthetic_args(tmp_path / "run", steps=3) + ["train.overwrite=true", "train.stop_at_step=1"])
    saved = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert saved == stopped and saved["stopped"] is True and saved["step"] == 1
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "eval_result.json").exists()


class _TwoClips(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        return torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8), index % 2, f"v{index}"  # (V, T, C, H, W)


class _NoLogits(torch.nn.Module):
    def forward(self, video: torch.Tensor) -> torch.Tensor:  # (N, C, T, H, W) -> (N, 2)
        return torch.zeros(video.shape[0], 2)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_evaluation_leaves_the_global_rng_to_training(workers: int) -> None:
    """Training's dropout and drop path draw from the global RNG: an epoch's evaluation must not move it, or
    eval.every_epochs changes the weights and a resume after that evaluation is not exact."""
    import datetime

    from recipes._distributed import setup
    from recipes._evaluation import evaluate

    world = setup("cpu", datetime.timedelta(minutes=1))
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    evaluate(_NoLogits(), _TwoClips(), world, ((0.5,) * 3, (0.5,) * 3), "2x1x1",
             batch_size=2, chunk_size=2, num_workers=workers)
    assert torch.equal(torch.rand(1), expected)


def test_each_logged_lr_is_the_one_its_step_used(tmp_path: Path, synthetic_args) -> None:
    from recipes._builders import warmup_cosine

    summary = train.main(synthetic_args(tmp_path / "run", steps=6) + [
        "train.log_every=1", "optim.warmup_epochs=0.5", "optim.lr=0.01", "optim.min_lr=0.001"])
    rows = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in rows if r["kind"] == "train"]
    factor = warmup_cosine(3, 6, 0.1)  # 3 warmup steps of the 6; min_lr / lr = 0.1
    assert logged == pytest.approx([0.01 * factor(step) for step in range(6)], rel=1e-12)
    assert logged[0] == pytest.approx(0.01 / 3) and logged[-1] > 0.001  # the first step's, not the next one's


def test_a_diverged_run_stops_before_logging_or_saving_nan(tmp_path: Path, synthetic_args,
                                                            capsys: pytest.CaptureFixture) -> None:
    from recipes import cli

    args = synthetic_args(tmp_path / "run", steps=6) + ["train.log_every=3", "train.checkpoint_every=1",
                                                           "data.synthetic.num_classes=4"]
    assert cli.main(["train", *args, "optim.lr=1e12", "optim.warmup_epochs=0"]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert "adaptkit train: error: training diverged: the loss or the trained weights became NaN or infinite " \
        "between step 1 and step 2; stopped without logging or saving them (the newest checkpoint is step 1). " \
        "Lower optim.lr (now 1e+12) or set optim.clip_grad_norm and start again" in err
    run = tmp_path / "run"
    assert not (run / "final").exists() and [p.name for p in list_checkpoints(run)] == ["step_00000001"]
    assert not [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
