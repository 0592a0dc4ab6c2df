"""DataLoader workers end with the error that stops a run. The training workers ignore SIGTERM and SIGINT (so a run
can checkpoint when a job is cancelled), and an error's traceback keeps their iterator alive in a reference cycle: left
to the interpreter's exit, multiprocessing sends them SIGTERM and waits for them forever."""

from __future__ import annotations

import datetime
import gc
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import recipe_fixtures
import torch

from adaptkit.data import write_corrupt_video
from adaptkit.data.records import AnnotationError
from recipes import cli, train
from recipes._checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
video_folder, video_dataset, video_config = (  # the pytest fixtures used here
    recipe_fixtures.video_folder, recipe_fixtures.video_dataset, recipe_fixtures.video_config)


@pytest.fixture
def no_collection() -> Iterator[None]:
    """The cyclic garbage collector off: whether it happens to run between the error and the exit is luck."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def new_children(before: set[multiprocessing.process.BaseProcess]) -> list[int | None]:
    """The pids of this process's live children that were not in ``before`` (active_children also reaps)."""
    return [child.pid for child in set(multiprocessing.active_children()) - before]


def test_all_training_videos_unreadable_with_workers_exits_2_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for index in range(4):
        write_corrupt_video(folder / f"broken{index}.mp4", kind="truncated", seed=index)
    (folder / "list.txt").write_text("".join(f"broken{index}.mp4 {index % 2}\n" for index in range(4)))
    config = tmp_path / "config.yaml"
    listed = folder / "list.txt"
    config.write_text(recipe_fixtures.VIDEO_CONFIG.format(path=config, train=listed, val=listed, root=folder,
                                                          run_dir=tmp_path / "run", workers=2))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "recipes.train", "--config", str(config)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith("adaptkit train:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("adaptkit train: error: no readable video left: all 4 videos were skipped "
                               "(4 corrupt or truncated: ")
    assert lines[0].endswith("(in DataLoader worker process 0) (--debug shows the traceback)") \
        or lines[0].endswith("(in DataLoader worker process 1) (--debug shows the traceback)"), lines[0]
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr
    assert elapsed < 30  # hung until the timeout before: the workers outlived the error


@pytest.mark.parametrize("where", ["worker", "main process"])
def test_an_error_in_training_stops_the_workers(where: str, video_config: Path, video_dataset: Path,
                                                monkeypatch: pytest.MonkeyPatch, no_collection: None) -> None:
    if where == "worker":  # every training video unreadable: the dataset raises in the worker
        for label in range(4):
            shutil.copy(video_dataset / "broken.mp4", video_dataset / f"broken{label}.mp4")
        (video_dataset / "train.txt").write_text("".join(f"broken{label}.mp4 {label}\n" for label in range(4)))
        expected = "no readable video left"
    else:
        def optimizer_step(self: train.TrainRecipe) -> None:
            raise ValueError("fails in the main process")

        monkeypatch.setattr(train.TrainRecipe, "optimizer_step", optimizer_step)
        expected = "fails in the main process"
    before = set(multiprocessing.active_children())
    with pytest.raises((RuntimeError, ValueError), match=expected) as error:
        train.main(["--config", str(video_config), "data.num_workers=2"])
    # Checked while the error is alive, as in the CLI's handler: its traceback holds the loader, so the workers must
    # stop when the loop ends, not when the error is freed (a reference cycle frees it at the exit, after the hang).
    assert new_children(before) == [] and error.value is not None


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        raise ValueError(f"cannot read v{index}")


def test_an_error_in_an_evaluation_worker_stops_its_workers_and_is_one_line(no_collection: None) -> None:
    from recipes._distributed import setup
    from recipes._evaluation import evaluate

    world = setup("cpu", datetime.timedelta(minutes=1))
    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError) as error:
        evaluate(torch.nn.Identity(), _Unreadable(), world, ((0.5,) * 3, (0.5,) * 3), "2x1x1", batch_size=2,
                 chunk_size=2, num_workers=2)
    assert new_children(before) == []
    assert cli.one_line(error.value) == "cannot read v0 (in DataLoader worker process 0)"


class _Raises(torch.utils.data.Dataset):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        if isinstance(self.error.__cause__, BaseException):
            raise self.error from self.error.__cause__
        raise self.error


def _chained() -> RuntimeError:
    error = RuntimeError("decoder gave up")
    error.__cause__ = OSError("disk read failed")
    return error


@pytest.mark.parametrize(("error", "expected"), [
    (KeyError("step"), "KeyError: 'step'"),  # built-in types other than ValueError / OSError keep their name
    (FileNotFoundError("clip.mp4 is missing"), "clip.mp4 is missing"),
    # PyTorch cannot rebuild this type from a message (it re-raises a RuntimeError): its name comes from the traceback
    (AnnotationError("list.txt", "label 9\noutside [0, 4)", line=3), "list.txt, line 3: label 9 outside [0, 4)"),
    (_chained(), "RuntimeError: decoder gave up"),  # the raised error, not its cause
])
def test_a_worker_error_is_the_workers_own_message(error: BaseException, expected: str) -> None:
    loader = torch.utils.data.DataLoader(_Raises(error), num_workers=1)
    with pytest.raises(Exception, match="Caught") as raised:
        next(iter(loader))
    assert cli.one_line(raised.value) == f"{expected} (in DataLoader worker process 0)"


def test_sigterm_to_the_whole_job_with_workers_checkpoints_and_exits(video_config: Path, tmp_path: Path) -> None:
    """scancel signals every process: the workers ignore it, the run checkpoints at the step's end, and the workers
    stop with the loop (none is left behind, and the process does not wait for them at its exit)."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "recipes.train", "--config", str(video_config),
                                f"train.output_dir={run}", "train.max_steps=2000", "eval.at_end=false",
                                "data.num_workers=2"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "train.csv").is_file() or len((run / "train.csv").read_text().splitlines()) < 3:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        sent = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)  # the process group: the main process and its workers
        stderr = process.communicate(timeout=60)[1]
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 143, stderr[-3000:]
    assert "adaptkit train: interrupted at step" in stderr and list_checkpoints(run)
    assert elapsed < 30
    left = subprocess.run(["pgrep", "-g", str(process.pid)], capture_output=True, text=True, check=False).stdout
    assert left.split() == []
