"""Two processes under torchrun on CPU (gloo): DDP keeps the adapters identical, evaluation is sharded and gathered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe_fixtures import video_config, video_dataset, video_folder  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[2]


def test_two_process_gloo_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "recipes.train",
        "--config", "synthetic_motion", f"train.output_dir={run_dir}", "train.device=cpu", "train.max_steps=3", "train.checkpoint_every=2",
        "data.batch_size=2", "train.global_batch_size=8",  # 2 clips x 2 processes x 2 accumulated micro-batches
        "data.synthetic.train_videos=24", "data.synthetic.val_videos=7", "data.num_frames=4",
        "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "model.options.drop_path=0.2", "train.num_threads=1",
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 3
    fingerprints = summary["adapter_sha256_per_rank"]  # each rank hashed its own trainable tensors
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    # Training moved the adapters (the second layers of fresh adapters are exactly zero).
    saved = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
    assert any(name.endswith("fc2.weight") and tensor.abs().sum() > 0 for name, tensor in saved.items())
    # Every rank saved its RNG state; evaluation saw each of the 7 videos exactly once.
    state = torch.load(run_dir / "checkpoints" / "step_00000003" / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    result = json.loads((run_dir / "eval_result.json").read_text())
    assert result["video_ids"] == [f"synthetic_{i:05d}" for i in range(7)]


def test_two_process_evaluation_lists_every_ranks_unreadable_videos(video_config: Path, video_dataset: Path,
                                                                    tmp_path: Path) -> None:
    from recipes import train

    summary = train.main(["--config", str(video_config), "train.max_steps=1", "eval.at_end=false"])
    lines = (video_dataset / "list.txt").read_text().splitlines()
    val = tmp_path / "val.txt"  # rank 0 evaluates items 0 and 2 (broken), rank 1 items 1 and 3 (missing)
    val.write_text("\n".join(lines[8:10] + ["broken.mp4 1", "missing.mp4 0"]) + "\n")
    output = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "recipes.evaluate", "--checkpoint", str(Path(summary["run_dir"]) / "final"),
               "--output", str(output), f"data.val.annotations={val}", "train.device=cpu",
               "data.max_missing_fraction=0.5"]  # 1 of the 4 listed videos is missing on purpose
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    broken, missing = str(video_dataset / "broken.mp4"), str(video_dataset / "missing.mp4")
    assert ("evaluation data: 2 videos left out (missing or unreadable):\n"
            f"  {broken} (corrupt or truncated)\n  {missing} (missing)") in done.stdout
    result = json.loads(output.read_text())
    assert result["skipped_ids"] == ["broken", "missing"] and result["num_videos"] == 2
    assert result["extra"]["skipped"] == [[broken, "corrupt or truncated"], [missing, "missing"]]


def test_each_process_takes_its_gpu_or_the_only_one_it_sees() -> None:
    from recipes._distributed import device_index

    assert [device_index(rank, 8) for rank in range(8)] == list(range(8))  # torchrun: every GPU of the node visible
    assert [device_index(rank, 1) for rank in range(4)] == [0, 0, 0, 0]  # one visible GPU per task (SLURM)
    assert device_index(0, 0) == 0


def test_the_cuda_rng_state_is_the_own_devices_only(monkeypatch) -> None:
    from recipes import _checkpoint

    states = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": states[device])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(states.values()))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.update({device: state}))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda all_states: restored.update(enumerate(all_states)))
    state = _checkpoint.rng_state()
    assert [t.item() for t in state["cuda"]] == [1]  # the process on GPU 1 saves GPU 1's state, not GPU 0's
    _checkpoint.set_rng_state(state)
    assert {device: t.item() for device, t in restored.items()} == {1: 1}  # and restores only its own
    restored.clear()
    _checkpoint.set_rng_state({**state, "cuda": list(states.values())})  # a checkpoint holding every GPU's state
    assert {device: t.item() for device, t in restored.items()} == {1: 1}


def test_warnings_of_other_ranks_start_with_the_rank(monkeypatch, capsys) -> None:
    import logging
    import warnings

    from recipes._logging import setup_logging

    monkeypatch.setenv("RANK", "1")
    setup_logging(is_main=False)
    logging.getLogger("recipes.train").warning("a video was skipped")
    logging.getLogger("recipes.train").info("not shown on other ranks")
    warnings.warn("a library's warning", UserWarning, stacklevel=1)
    monkeypatch.setenv("RANK", "0")
    setup_logging(is_main=True)
    logging.getLogger("recipes.train").warning("said by rank 0")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("rank 1: ") and lines[0].endswith("a video was skipped")
    assert lines[1].startswith("rank 1: ") and "UserWarning: a library's warning" in lines[1]
    assert not lines[-1].startswith("rank") and lines[-1].endswith("said by rank 0")
    assert not any("not shown" in line for line in lines)


def test_the_process_group_timeout_comes_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime

    import torch.distributed as dist

    from recipes import _distributed
    from recipes._config import load_config

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    minutes = load_config("synthetic_motion", ["train.dist_timeout_min=5"]).train.dist_timeout_min
    _distributed.setup("cpu", datetime.timedelta(minutes=minutes))
    assert seen["timeout"] == datetime.timedelta(minutes=5) and seen["backend"] == "gloo"
