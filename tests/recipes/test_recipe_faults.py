"""Two processes under torchrun (CPU, gloo) when something goes wrong: a rank that does not see the run folder, a
SIGTERM reaching one rank, one rank failing; and the single-process interrupt. Faults come from torchrun_faults.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import cli, train
from recipes._checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).with_name("torchrun_faults.py")


def small_run(run_dir: Path | str, steps: int = 4) -> list[str]:
    """12 clips, 4 per optimizer step (2 per process x 2 processes, or 2 x 2 accumulated micro-batches on one)."""
    return ["--config", "synthetic_motion", f"train.output_dir={run_dir}", f"train.max_steps={steps}",
            "train.global_batch_size=4", "data.batch_size=2", "data.synthetic.train_videos=12",
            "data.synthetic.val_videos=4", "data.num_frames=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32",
            "model.kwargs.num_heads=2", "train.num_threads=1", "train.log_every=1", "eval.at_end=false",
            "train.device=cpu"]


def torchrun(args: list[str], cwd: Path, fault: str = "none:-1:0", **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(FAULTS), *args]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "FAULT": fault, **env}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=150)


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "train.csv", encoding="utf-8") as file:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(file)}


def test_a_rank_that_cannot_read_the_chosen_checkpoint_stops_every_rank(tmp_path: Path) -> None:
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    node0.mkdir(), node1.mkdir()
    train.main(small_run(node0 / "run") + ["train.stop_at_step=1"])  # one process, checkpoint at step 1
    # Rank 1 runs in node1/, where the relative run folder is empty: a node without the shared file system.
    done = torchrun(small_run("run") + ["--resume"], cwd=node0, fault="chdir:1:0", FAULT_DIR=str(node1))
    assert done.returncode != 0
    expected = f"rank 1 cannot read {Path('run') / 'checkpoints' / 'step_00000001'}"
    assert expected in done.stderr and "file system every node shares" in done.stderr, done.stderr[-3000:]
    # one line per rank, rank 1's naming it (torchrun then reports both)
    assert done.stderr.count("adaptkit train: error:") == 1 and done.stderr.count("adaptkit train: rank 1: error:") == 1


def test_resuming_on_another_number_of_processes_says_what_is_not_restored(tmp_path: Path) -> None:
    train.main(small_run(tmp_path / "run") + ["train.stop_at_step=1"])  # one process
    done = torchrun(small_run(tmp_path / "run") + ["--resume"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "written by 1 process(es), this run has 2" in done.stderr
    assert "data order is unaffected" in done.stderr
    assert done.stderr.count("is not restored") == 1  # said once, by rank 0


def test_sigterm_on_one_rank_checkpoints_on_every_rank_and_the_loss_covers_every_rank(tmp_path: Path) -> None:
    done = torchrun(small_run(tmp_path / "two"), cwd=tmp_path, fault="sigterm:1:2")
    assert done.returncode != 0
    assert "adaptkit train: interrupted at step 2; checkpoint written; continue with --resume" in done.stderr, \
        done.stderr[-3000:]
    assert [p.name for p in list_checkpoints(tmp_path / "two")] == ["step_00000002"]
    # The logged loss is the mean over both ranks' clips: what one process accumulating both micro-batches logs.
    train.main(small_run(tmp_path / "one", steps=2))
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert one.keys() == two.keys() == {1, 2}
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    resumed = torchrun(small_run(tmp_path / "two") + ["--resume"], cwd=tmp_path)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]


def test_the_ranks_that_did_not_fail_say_so(tmp_path: Path) -> None:
    done = torchrun(small_run(tmp_path / "run"), cwd=tmp_path, fault="error:0:1")
    assert done.returncode != 0
    assert "adaptkit train: error: injected failure after step 1" in done.stderr
    assert "adaptkit train: rank 1: stopped because another process failed" in done.stderr, done.stderr[-3000:]
    assert "Connection closed by peer" not in done.stderr and "Connection reset" not in done.stderr


def test_ctrl_c_in_one_process_finishes_the_step_and_writes_a_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    step_once = train.TrainRecipe.optimizer_step

    def optimizer_step(self: train.TrainRecipe) -> None:
        step_once(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train.TrainRecipe, "optimizer_step", optimizer_step)
    # A terminal's handler, whatever an earlier test in this process left (under xdist it was once SIG_IGN).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["train", *small_run(tmp_path / "run", steps=3)]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "adaptkit train: interrupted at step 2; checkpoint written; continue with --resume" \
        in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000002"]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["stopped"] and summary["step"] == 2  # not a summary of an earlier start
    monkeypatch.undo()
    assert train.main(small_run(tmp_path / "run", steps=3) + ["--resume"])["step"] == 3


def test_sigterm_in_the_final_evaluation_stops_at_once_and_resume_evaluates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """After final/ is saved, a signal stops the evaluation at once with one line and a stopped summary (before, the
    default handler killed the process: no line, no summary); --resume evaluates final/."""
    evaluate = train.evaluate

    def evaluate_then_signal(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", evaluate_then_signal)
    run = tmp_path / "run"
    assert cli.main(["train", *small_run(run, steps=2), "eval.at_end=true"]) == 143
    final = run / "final"
    assert (f"adaptkit train: SIGTERM during the final evaluation at step 2: stopped; the final model {final} is "
            "written") in capsys.readouterr().err
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stopped"] and summary["stopped_in"] == "final evaluation" and summary["step"] == 2
    assert (final / "adapter_model.safetensors").is_file() and not (run / "eval_result.json").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.undo()
    resumed = train.main(small_run(run, steps=2) + ["eval.at_end=true", "--resume"])
    assert not resumed["stopped"] and "eval" in resumed and (run / "eval_result.json").is_file()


def test_dataloader_workers_ignore_the_stop_signals() -> None:
    # scancel / a terminal signal every process of the job: the workers must not die before the main process
    # checkpoints, so they ignore SIGTERM and SIGINT (recipes/train.py passes this as worker_init_fn).
    import multiprocessing
    import signal

    from recipes._interrupt import ignore_stop_signals

    def child(queue) -> None:  # noqa: ANN001
        ignore_stop_signals(0)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        queue.put("alive")

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    process.join(20)
    assert process.exitcode == 0 and queue.get(timeout=5) == "alive"


def test_a_second_sigterm_stops_at_once_with_sigterms_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from recipes import _interrupt

    monkeypatch.setattr(_interrupt, "REPEAT_WINDOW_S", 0.0)  # the second signal counts however soon it comes
    step_once = train.TrainRecipe.optimizer_step

    def optimizer_step(self: train.TrainRecipe) -> None:
        step_once(self)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train.TrainRecipe, "optimizer_step", optimizer_step)
    assert cli.main(["train", *small_run(tmp_path / "run", steps=3)]) == 143
    assert "adaptkit train: SIGTERM again: stopped at once, without a checkpoint" in capsys.readouterr().err
