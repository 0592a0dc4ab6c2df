"""The train recipe's steps on their own, and what resume and the run folder guarantee: digests, the newest intact
checkpoint, refused model changes, skipped videos kept across a resume, no half-made run folder, file modes."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import adaptkit
from adaptkit.data import SyntheticMotionDataset
from recipe_fixtures import synthetic_args, video_config, video_dataset, video_folder  # noqa: F401 - pytest fixtures
from recipes import train
from recipes._checkpoint import list_checkpoints, load_checkpoint, model_config_differences
from recipes._config import load_config, to_yaml
from recipes._distributed import setup
from recipes._files import CorruptFileError


def resume_args(synthetic_args, run_dir: Path) -> list[str]:
    return synthetic_args(run_dir, steps=6) + ["data.synthetic.train_videos=12", "train.checkpoint_every=2",
                                               "eval.at_end=false", "model.options.drop_path=0.2"]


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the tensor data: safetensors itself does not notice
    path.write_bytes(bytes(data))


def test_each_setup_step_runs_on_its_own_and_writes_nothing(tmp_path: Path, synthetic_args) -> None:
    config = load_config("synthetic_motion", synthetic_args(tmp_path / "run", steps=3)[2:] + ["data.batch_size=2"])
    recipe = train.TrainRecipe(config, setup("cpu"))
    recipe.setup_data()
    # 12 clips, 4 per optimizer step from 2 micro-batches of 2.
    assert (recipe.accumulation, recipe.steps_per_epoch, recipe.total_steps) == (2, 3, 3)
    assert len(recipe.sampler) == 12 and recipe.classes == list(recipe.train_set.classes)
    recipe.setup_checkpoint()
    assert recipe.checkpoint is None and recipe.step == 0
    recipe.setup_model()
    assert recipe.model.num_frames == 4 and recipe.model.num_classes == 4 and recipe.weights == "random init"
    recipe.setup_optimizer()
    grouped = [id(p) for group in recipe.optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in recipe.model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # every trainable tensor, once
    groups = len(recipe.optimizer.param_groups)
    assert recipe.scheduler.get_last_lr() == [config.optim.lr] * groups  # warmup_epochs=0.1 rounds to no warmup
    assert not (tmp_path / "run").exists()  # nothing is written before start_run
    assert recipe.start_run() is True
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "image_model.safetensors").is_file()


def test_a_config_that_fails_before_the_first_step_leaves_no_run_folder(tmp_path: Path, synthetic_args,
                                                                       capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="do not fill one step"):  # fails in setup_data
        train.main(synthetic_args(run_dir) + ["data.synthetic.train_videos=2"])
    assert not run_dir.exists()
    # A crop size the model cannot embed is refused when the model is built, before the run folder exists.
    with pytest.raises(ValueError, match="data.augment.crop_size=24: frame size 24x24 does not match"):
        train.main(synthetic_args(run_dir) + ["data.augment.crop_size=24", "data.synthetic.size=24"])
    assert not run_dir.exists()
    # Fails inside the first training step, after the run folder was created: it is removed again, and said so.
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train.main(synthetic_args(run_dir))
    assert not run_dir.exists()
    assert f"the run failed before its first step; removed its folder {run_dir}" in capsys.readouterr().err


def test_files_get_the_users_umask(tmp_path: Path, synthetic_args) -> None:
    old = os.umask(0o022)
    try:
        train.main(synthetic_args(tmp_path / "run") + ["eval.at_end=false"])
        model = adaptkit.inject(timm.create_model("test_vit"), "aim", num_frames=2, num_classes=3)
        model.save_pretrained(tmp_path / "library")  # the library's own atomic writes too
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path: Path, synthetic_args,
                                                  capsys: pytest.CaptureFixture) -> None:
    straight = train.main(resume_args(synthetic_args, tmp_path / "straight"))
    train.main(resume_args(synthetic_args, tmp_path / "run") + ["train.stop_at_step=4"])
    newest = list_checkpoints(tmp_path / "run")[-1]
    flip_last_byte(newest / "adapter_model.safetensors")
    with pytest.raises(CorruptFileError, match="adapter_model.safetensors is corrupt"):
        load_checkpoint(newest)
    resumed = train.main(resume_args(synthetic_args, tmp_path / "run") + ["--resume"])
    warning = next(line for line in capsys.readouterr().err.splitlines() if "WARNING" in line)
    assert "cannot resume from step_00000004" in warning and f"{newest}/adapter_model.safetensors" in warning
    assert resumed["step"] == straight["step"] == 6
    # The summary names the run's own copy of its random backbone, not the pruned checkpoint it was restored from.
    assert resumed["weights"] == straight["weights"] == "random init"
    assert resumed["image_weights"] == str(tmp_path / "run" / "image_model.safetensors")
    assert Path(resumed["image_weights"]).is_file() and not (tmp_path / "run" / "checkpoints" / "step_00000002").exists()
    expected, got = adapter(tmp_path / "straight"), adapter(tmp_path / "run")  # resumed from step 2: still exact
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_every_checkpoint_broken_is_an_error_naming_the_files(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    train.main(resume_args(synthetic_args, run_dir) + ["train.stop_at_step=4"])
    config_before = (run_dir / "config.yaml").read_text()
    old, new = list_checkpoints(run_dir)
    flip_last_byte(old / "image_model.safetensors")
    (new / "training_state.pt").write_bytes(b"")
    with pytest.raises(CorruptFileError) as error:
        train.main(resume_args(synthetic_args, run_dir) + ["--resume", "optim.lr=0.5"])
    assert f"{old}/image_model.safetensors is corrupt" in str(error.value)
    assert f"{new}/training_state.pt is corrupt" in str(error.value)
    assert (run_dir / "config.yaml").read_text() == config_before  # the failed resume did not overwrite it


def test_resume_refuses_another_model_config_naming_the_keys(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    linear = ["model.strategy=linear-probe", "model.options.drop_path=null", "model.options.temporal_in=null",
              "model.options.scale=null"]
    train.main(resume_args(synthetic_args, run_dir) + linear + ["train.stop_at_step=2"])
    with pytest.raises(ValueError, match=r"model.strategy: checkpoint 'linear-probe', this config 'aim'") as error:
        train.main(resume_args(synthetic_args, run_dir) + ["--resume"])
    assert "model.options.drop_path" in str(error.value) and "model.kwargs" not in str(error.value)
    # Options that do not change the trained tensors may differ.
    summary = train.main(resume_args(synthetic_args, run_dir) + linear + ["--resume", "model.grad_checkpointing=true"])
    assert summary["step"] == 6
    assert json.loads((run_dir / "final" / "adapter_config.json").read_text())["strategy"] == "linear-probe"


def test_leftover_unfinished_checkpoint_writes_are_removed_on_start(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    train.main(resume_args(synthetic_args, run_dir) + ["train.stop_at_step=2"])
    leftover = run_dir / "checkpoints" / ".tmp_step_00000005"
    leftover.mkdir()
    (leftover / "adapter_model.safetensors").write_bytes(b"half")
    train.main(resume_args(synthetic_args, run_dir) + ["--resume", "train.stop_at_step=4"])
    assert not leftover.exists()
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000002", "step_00000004"]


def test_skipped_videos_are_kept_across_a_resume(video_config: Path, video_dataset: Path) -> None:
    args = ["--config", str(video_config), "train.max_steps=4", "train.checkpoint_every=1", "eval.at_end=false"]
    stopped = train.main(args + ["train.stop_at_step=3"])
    run_dir = Path(stopped["run_dir"])
    state = torch.load(list_checkpoints(run_dir)[-1] / "training_state.pt", weights_only=True)
    broken = str(video_dataset / "broken.mp4")
    assert [path for path, _ in state["skipped_train"]] == [broken]
    resumed = train.main(args + ["--resume"])
    assert [path for path, _ in resumed["skipped_train"]] == [broken]
    saved = json.loads((run_dir / "train_summary.json").read_text())
    assert saved["skipped_train"] == [[broken, "corrupt or truncated"]]


def test_progress_reports_the_data_wait_share(tmp_path: Path, synthetic_args, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    def data_wait(run: str) -> list[float]:
        train.main(synthetic_args(tmp_path / run, steps=3) + ["eval.at_end=false"])
        records = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["data_wait"] for r in records if r["kind"] == "train"]

    fast = data_wait("fast")
    assert len(fast) == 3 and all(0 < share < 1 for share in fast)
    # A loader that takes 100 ms per clip (400 ms per batch) for a ~10 ms step: the wait dominates, and says so.
    original = SyntheticMotionDataset.__getitem__
    monkeypatch.setattr(SyntheticMotionDataset, "__getitem__", lambda self, i: (time.sleep(0.1), original(self, i))[1])
    slow = data_wait("slow")
    assert all(share > 0.5 for share in slow), slow
    assert "data=" in capsys.readouterr().err  # shown on the progress bar


def test_a_run_recorded_with_a_relative_weights_path_still_resumes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs recorded before paths were stored absolute hold model.checkpoint as written; it names the same file.
    monkeypatch.chdir(tmp_path)
    config = load_config("synthetic_motion", ["model.checkpoint=weights.safetensors"])
    recorded = to_yaml(config).replace(str(tmp_path / "weights.safetensors"), "weights.safetensors")
    assert "checkpoint: weights.safetensors" in recorded
    assert model_config_differences(recorded, config) == []
    moved = recorded.replace("checkpoint: weights.safetensors", "checkpoint: other/weights.safetensors")
    assert model_config_differences(moved, config) == [
        f"model.checkpoint: checkpoint {str(tmp_path / 'other' / 'weights.safetensors')!r}, this config "
        f"{str(tmp_path / 'weights.safetensors')!r}"]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _eval_steps(run_dir: Path) -> tuple[list[int], list[int]]:
    """Steps of the eval records in metrics.jsonl and in eval.csv."""
    csv_steps = [int(line.split(",")[0]) for line in (run_dir / "eval.csv").read_text().splitlines()[1:]]
    return [r["step"] for r in _records(run_dir) if r["kind"] == "eval"], csv_steps


def test_an_evaluation_cut_short_by_a_kill_runs_again_on_resume(tmp_path: Path, synthetic_args) -> None:
    """The epoch's checkpoint is written before its evaluation: a kill during that evaluation must not lose it."""
    args = synthetic_args(tmp_path / "run", steps=6) + ["data.synthetic.train_videos=12", "train.checkpoint_every=0",
                                                        "eval.every_epochs=1", "eval.at_end=false"]
    straight = tmp_path / "straight"
    train.main(synthetic_args(straight, steps=6) + args[len(synthetic_args(straight, steps=6)):])
    run_dir = tmp_path / "run"
    train.main(args + ["train.stop_at_step=3"])
    assert _eval_steps(run_dir) == ([3], [3])
    jsonl = run_dir / "metrics.jsonl"  # as a kill during that evaluation leaves the logs: no eval row yet
    jsonl.write_text("".join(line + "\n" for line in jsonl.read_text().splitlines() if '"eval"' not in line))
    (run_dir / "eval.csv").unlink()
    train.main(args + ["--resume"])
    assert _eval_steps(run_dir) == _eval_steps(straight) == ([3], [3])
    train.main(args + ["--resume"])  # resumed again at the end: nothing to redo, nothing logged twice
    assert _eval_steps(run_dir) == ([3], [3])


def test_resuming_a_finished_run_logs_its_final_evaluation_once(tmp_path: Path, synthetic_args) -> None:
    run_dir = tmp_path / "run"
    args = resume_args(synthetic_args, run_dir)[:-1] + ["eval.at_end=true"]  # resume_args turns it off: on here
    train.main(args)
    before, train_steps = _eval_steps(run_dir), [r["step"] for r in _records(run_dir) if r["kind"] == "train"]
    assert before == ([6], [6]) and train_steps == [1, 2, 3, 4, 5, 6]
    for _ in range(2):
        train.main(args + ["--resume"])
    assert _eval_steps(run_dir) == before
    assert [r["step"] for r in _records(run_dir) if r["kind"] == "train"] == train_steps


def test_a_torn_last_log_line_is_dropped_and_the_run_resumes(tmp_path: Path, synthetic_args,
                                                            capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    train.main(resume_args(synthetic_args, run_dir) + ["train.stop_at_step=4"])
    with open(run_dir / "metrics.jsonl", "a") as log:
        log.write('{"kind": "train", "st')  # what a kill or a full disk leaves mid-write
    with open(run_dir / "train.csv", "a") as table:
        table.write("5,0.3")
    summary = train.main(resume_args(synthetic_args, run_dir) + ["--resume"])
    assert summary["step"] == 6
    assert f"{run_dir / 'metrics.jsonl'} line" in capsys.readouterr().err
    assert all(isinstance(r["step"], int) for r in _records(run_dir))
    assert [int(line.split(",")[0]) for line in (run_dir / "train.csv").read_text().splitlines()[1:]] == \
        [r["step"] for r in _records(run_dir) if r["kind"] == "train"]


def test_a_folder_that_is_not_a_run_is_never_written_into(tmp_path: Path, synthetic_args) -> None:
    dataset = tmp_path / "kinetics"
    dataset.mkdir()
    (dataset / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n")
    for flag in ("train.overwrite=false", "train.overwrite=true", "train.resume=true"):
        with pytest.raises(FileExistsError, match=r"holds files that are not an adaptkit run \(train.csv\)"):
            train.main(synthetic_args(dataset) + [flag])
    assert [p.name for p in dataset.iterdir()] == ["train.csv"]
    assert (dataset / "train.csv").read_text() == "label,youtube_id,time_start,time_end,split\n"
    hidden_only = tmp_path / "new_run"
    hidden_only.mkdir()
    (hidden_only / ".gitkeep").touch()
    assert train.main(synthetic_args(hidden_only))["step"] == 2  # hidden files are nobody's data
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file: a run needs a folder"):
        train.main(synthetic_args(a_file))


def test_starting_a_run_again_removes_only_its_own_logs(tmp_path: Path, synthetic_args,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    summary = train.main(synthetic_args(Path("run")))  # a relative output folder
    assert summary["run_dir"] == str(run_dir)  # recorded absolute
    (run_dir / "notes.csv").write_text("my,own\n")
    (run_dir / "controls" / "linear-probe" / "final").mkdir(parents=True)  # the last run's control, not this one's
    train.main(synthetic_args(run_dir) + ["train.overwrite=true"])
    assert (run_dir / "notes.csv").read_text() == "my,own\n" and not (run_dir / "controls").exists()
    assert {r["kind"] for r in _records(run_dir)} == {"train", "eval"} and (run_dir / "train.csv").is_file()


def test_resuming_with_other_settings_names_them(tmp_path: Path, synthetic_args,
                                                 capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    train.main(resume_args(synthetic_args, run_dir) + ["train.stop_at_step=2"])
    capsys.readouterr()
    train.main(resume_args(synthetic_args, run_dir) + ["--resume", "optim.lr=0.5", "train.seed=7",
                                                       "data.num_workers=1"])
    warning = next(line for line in capsys.readouterr().err.splitlines() if "resuming with settings" in line)
    assert "optim.lr: checkpoint 0.003, this config 0.5" in warning and "train.seed: checkpoint 0, this config 7" \
        in warning
    assert "num_workers" not in warning and "resume" not in warning.split("(")[1].split(")")[0]


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious training_state.pt would do when unpickled
        return (Path.touch, (self.marker,))


def test_a_training_state_that_would_run_code_is_refused_in_one_line(tmp_path: Path, synthetic_args) -> None:
    import pickle

    from recipes._files import write_digests

    run_dir = tmp_path / "run"
    train.main(resume_args(synthetic_args, run_dir) + ["train.stop_at_step=2"])
    (checkpoint,) = list_checkpoints(run_dir)
    marker = tmp_path / "code_ran"
    (checkpoint / "training_state.pt").write_bytes(pickle.dumps(_RunsCode(marker)))
    write_digests(checkpoint)  # even with its digest matching
    with pytest.raises(CorruptFileError) as error:
        train.main(resume_args(synthetic_args, run_dir) + ["--resume"])
    message = str(error.value)
    assert "training_state.pt is not a training state of tensors and plain data" in message
    assert message.count("training_state.pt") == 1  # named once, not "X is unreadable: X is not ..."
    assert "weights_only=False" not in message and "\n" not in message and len(message) < 600
    assert not marker.exists()


def test_a_kill_while_a_step_is_checkpointed_again_keeps_its_checkpoint(tmp_path: Path, synthetic_args,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from recipes import _checkpoint

    run = tmp_path / "run"
    train.main(synthetic_args(run, steps=2) + ["train.stop_at_step=1"])
    config = load_config("synthetic_motion", synthetic_args(run, steps=2)[2:] + ["train.resume=true"])
    recipe = train.TrainRecipe(config, setup("cpu"))
    recipe.setup_data(), recipe.setup_checkpoint(), recipe.setup_model(), recipe.setup_optimizer(), recipe.start_run()
    replace = os.replace

    def killed_before_the_new_one_is_in_place(source, target):  # noqa: ANN001
        if Path(source).name.startswith(".tmp_"):
            raise KeyboardInterrupt
        replace(source, target)

    monkeypatch.setattr(_checkpoint.os, "replace", killed_before_the_new_one_is_in_place)
    with pytest.raises(KeyboardInterrupt):
        recipe.save(1)  # step 1 written again, as a resumed run interrupted at once does
    monkeypatch.undo()
    recipe.metrics.close()
    (found,) = list_checkpoints(run)
    assert load_checkpoint(found)["step"] == 1  # still a complete, intact checkpoint of step 1
    train.main(synthetic_args(run, steps=2) + ["--resume"])  # resumes from it; its start puts it back in place
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())


def test_resume_compares_the_strategy_options_as_built() -> None:
    # aim's ratio defaults to 0.25: written out or left to the default, it is the same model, and resumes.
    recorded = to_yaml(load_config("synthetic_motion"))
    assert "ratio" not in load_config("synthetic_motion").model.options
    spelled = load_config("synthetic_motion", ["model.options.ratio=0.25", "model.options.layers=all"])
    assert model_config_differences(recorded, spelled) == []
    assert model_config_differences(recorded, load_config("synthetic_motion", ["model.options.ratio=0.5"])) == [
        "model.options.ratio: checkpoint 0.25, this config 0.5"]
