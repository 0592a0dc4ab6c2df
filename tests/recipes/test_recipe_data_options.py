"""Recipe data options: the pre-decoded frame cache (one command, read by training and multi-view evaluation) and
GPU decoding (a clear one-line refusal where it cannot run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from adaptkit.data import FrameCache, build_frame_cache, load_annotations
from recipe_fixtures import TINY_MODEL, video_config, video_dataset, video_folder  # noqa: F401 - pytest fixtures
from recipes import cli, train


def test_frame_cache_command_then_train_and_evaluate_from_it(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "frames"
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "cached 12 videos at short side 36" in out and "; not cached: 1 unreadable\n" in out and "broken.mp4" in out
    assert json.loads((cache / "index.json").read_text())["short_side"] == 36  # data.augment.resize_size
    for video in video_dataset.glob("*.mp4"):  # the videos are gone: only the cache can feed the run
        video.unlink()
    summary = train.main(["--config", str(video_config), "train.max_steps=2", f"data.frame_cache={cache}"])
    assert summary["step"] == 2
    assert [Path(path).name for path, _ in summary["skipped_train"]] == ["broken.mp4"]
    result = json.loads((Path(summary["run_dir"]) / "eval_result.json").read_text())
    assert result["num_videos"] == 4 and result["skipped_ids"] == ["broken"] and result["views"] == "4x2x1"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_decoding_without_cuda_is_one_line_and_exit_2(video_config: Path, capsys: pytest.CaptureFixture) -> None:
    status = cli.main(["train", "--config", str(video_config), "data.decode_device=cuda"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "needs a CUDA device" in err


def test_gpu_decoding_needs_the_main_process(video_config: Path, capsys: pytest.CaptureFixture) -> None:
    status = cli.main(["train", "--config", str(video_config), "data.decode_device=cuda", "data.num_workers=2"])
    err = capsys.readouterr().err
    assert status == 2 and "data.num_workers" in err and "decode_device=cuda" in err


@pytest.mark.parametrize("overrides, expected", [
    (["data.val.root={other}"], "data.val: none of the 5 videos listed in {val} exists (the first: {other}/"),
    (["data.options.bogus=1"], "data.options: ['bogus'] are not options of the video_list format (it takes "
                               "['classes', 'num_classes'])"),
    (["data.num_classes=3"], "{train}, line 4: label 3 outside [0, 3)"),
    (["data.val.annotations={empty}"], "data.val.annotations: {empty} lists no videos"),
], ids=["wrong_root", "unknown_option", "label_past_num_classes", "empty_list"])
def test_data_mistakes_are_one_line_before_any_training(video_config: Path, video_dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture, overrides: list[str],
                                                         expected: str) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (tmp_path / "empty.txt").write_text("\n")
    names = {"other": other, "val": video_dataset / "val.txt", "train": video_dataset / "train.txt",
             "empty": tmp_path / "empty.txt"}
    status = cli.main(["train", "--config", str(video_config), *[o.format(**names) for o in overrides]])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and expected.format(**names) in err, err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_listed_paths_without_a_root_are_recorded_from_where_the_run_started(
    video_config: Path, video_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(video_dataset)  # the lists' paths are relative to this folder
    summary = train.main(["--config", str(video_config), "data.train.root=null", "data.val.root=null",
                          "train.max_steps=1"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(Path(summary["run_dir"]) / "final")]) == 0
    assert "4 videos" in capsys.readouterr().out


def test_a_training_class_without_videos_is_named(video_folder: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(video_folder, tree, ignore=shutil.ignore_patterns("*.txt"))
    (tree / "motion_new").mkdir()  # a class folder nobody filled: a class all the same, said out loud
    status = cli.main(["train", "--config", "synthetic_motion", "data.source=video", "data.format=folder_tree",
                       f"data.train.annotations={tree}", f"data.val.annotations={tree}", "data.num_frames=4",
                       "train.max_steps=1", "train.global_batch_size=4", "data.batch_size=4", "eval.at_end=false",
                       f"train.output_dir={tmp_path / 'run'}", *TINY_MODEL])
    err = capsys.readouterr().err
    assert status == 0 and f"WARNING recipes: data.train: 1 class(es) without a video in {tree}: 'motion_new'" in err


def test_the_cache_command_says_which_listed_videos_it_did_not_cache(
        video_dataset: Path, video_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for split, row in (("train", "gone_train.mp4 2"), ("val", "gone_val.mp4 0")):  # a missing file in each split
        with open(video_dataset / f"{split}.txt", "a") as file:
            file.write(row + "\n")
    cache = tmp_path / "frames"
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache), "data.max_missing_fraction=0.2"]) == 0
    out, err = capsys.readouterr()
    assert "training" not in out + err and "evaluat" not in out + err and "skip" not in out + err, out + err
    assert f"data.train: 1 of 10 video files are missing (10.0%; e.g. {video_dataset / 'gone_train.mp4'}), listed in " \
           f"{video_dataset / 'train.txt'}; not cached" in err
    assert "data.val: 1 of 6 video files are missing (16.7%" in err
    assert f"cached 12 videos at short side 36 in {cache}; not cached: 2 missing, 1 unreadable\n" in out
    for video, reason in (("gone_train.mp4", "missing"), ("gone_val.mp4", "missing"), ("broken.mp4", "cannot open")):
        assert f"\n  {video_dataset / video} ({reason}" in out
    assert out.count(" (") == 3  # broken.mp4, listed in both splits, once
    # Above data.max_missing_fraction the refusal says what caching the rest takes.
    assert cli.main(["cache", "--config", str(video_config), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the warning about the training split
    assert last.startswith("adaptkit cache: error: data.val: 1 of 6 video files are missing") and (
        "To cache the rest, set data.max_missing_fraction=0.17" in last), err


def test_a_frame_cache_of_other_videos_is_refused_and_a_partial_one_warned_about(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    val = load_annotations("video_list", video_dataset / "val.txt", root=str(video_dataset))
    train_records = load_annotations("video_list", video_dataset / "train.txt", root=str(video_dataset)).records
    build_frame_cache(val, tmp_path / "val_frames", short_side=36)
    capsys.readouterr()  # the build's warning about broken.mp4
    status = cli.main(["train", "--config", str(video_config), f"data.frame_cache={tmp_path / 'val_frames'}"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert (f"data.train: none of the 9 videos listed in {video_dataset / 'train.txt'} is in the frame cache "
            f"{tmp_path / 'val_frames'}") in err and "`adaptkit cache --update` adds them" in err
    assert not (tmp_path / "run").exists()

    build_frame_cache([*val.records, *train_records[:2]], tmp_path / "some_frames", short_side=36)
    capsys.readouterr()
    # 6 of the 9 are not in the cache: above data.max_missing_fraction, refused as missing files are
    cached = f"data.frame_cache={tmp_path / 'some_frames'}"
    assert cli.main(["train", "--config", str(video_config), cached]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"data.train: 6 of 9 videos are not in the frame cache {tmp_path / 'some_frames'}"
                                     " (66.7%; e.g. ") in err
    assert "`adaptkit cache --update` adds them. To train on the rest, set data.max_missing_fraction=0.67" in err
    summary = train.main(["--config", str(video_config), "train.max_steps=2", cached, "data.max_missing_fraction=0.7",
                          "train.global_batch_size=2", "data.batch_size=2"])
    err = capsys.readouterr().err  # the recipe's own logging (it replaces pytest's handlers)
    # broken.mp4 was unreadable when the cache was built: skipped, but not counted as missing from the cache
    assert "WARNING recipes: data.train: 6 of 9 videos are not in the frame cache" in err
    assert "left out of training" in err
    reasons = dict((Path(path).name, reason) for path, reason in summary["skipped_train"])
    assert reasons.pop("broken.mp4") == "corrupt or truncated"
    assert len(reasons) == 6 and set(reasons.values()) == {"not in the frame cache"}


def test_the_cache_command_updates_a_cache_after_a_video_changed(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "frames"
    # The config may already name the cache it is building: the command reads the videos, not a cache.
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache), f"data.frame_cache={cache}"]) == 0
    video = next(video_dataset.glob("*/*.mp4"))
    shutil.copy(next(p for p in video_dataset.glob("*/*.mp4") if p.stat().st_size != video.stat().st_size), video)
    assert FrameCache(cache).changed(video) is not None  # read as stale until the update
    capsys.readouterr()
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache), "--update"]) == 0
    out, err = capsys.readouterr()
    # One changed video and the broken one (unreadable before, so retried); the other 11 are kept.
    assert "decoding 2 of the 13 listed videos (new, changed or unreadable before), keeping 11 cached videos" in err
    assert "cached 12 videos" in out and "MiB of old frames of re-cached videos stay" in out
    assert FrameCache(cache).changed(video) is None and FrameCache(cache).num_frames(video) > 0


def test_a_run_finds_the_videos_the_cache_command_found_under_another_extension(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The lists name the videos without their extension: the cache command finds (and records) the .mp4 files,
    and a run from the cache finds them again by the listed names, the files gone."""
    for split in ("train.txt", "val.txt"):
        listed = video_dataset / split
        listed.write_text(listed.read_text().replace(".mp4 ", " "))
    cache = tmp_path / "frames"
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache)]) == 0
    assert "cached 12 videos" in capsys.readouterr().out
    for video in video_dataset.glob("**/*.mp4"):
        video.unlink()
    summary = train.main(["--config", str(video_config), "train.max_steps=2", f"data.frame_cache={cache}"])
    assert summary["step"] == 2 and [Path(path).name for path, _ in summary["skipped_train"]] == ["broken"]
    result = json.loads((Path(summary["run_dir"]) / "eval_result.json").read_text())
    assert result["num_videos"] == 4 and result["skipped_ids"] == ["broken"]


def test_videos_missing_when_the_cache_was_built_are_reported_missing_by_a_run_from_it(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A listed file absent when `adaptkit cache` ran is recorded as missing (in either split), counted apart from
    the unreadable ones, and a run from the cache reports it as missing, as a run from the videos would."""
    train_video, val_video = (video_dataset / (video_dataset / name).read_text().split()[0]
                              for name in ("train.txt", "val.txt"))
    train_video.unlink()
    val_video.unlink()
    cache = tmp_path / "frames"
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache), "data.max_missing_fraction=0.5"]) == 0
    out = capsys.readouterr().out
    assert "cached 10 videos at short side 36" in out and "; not cached: 2 missing, 1 unreadable" in out
    assert f"  {train_video} (missing)" in out and f"  {val_video} (missing)" in out
    summary = train.main(["--config", str(video_config), "train.max_steps=2", f"data.frame_cache={cache}",
                          "data.max_missing_fraction=0.5"])
    broken = (str(video_dataset / "broken.mp4"), "corrupt or truncated")
    assert [tuple(item) for item in summary["skipped_train"]] == [broken, (str(train_video), "missing")]
    result = json.loads((Path(summary["run_dir"]) / "eval_result.json").read_text())
    assert sorted(map(tuple, result["extra"]["skipped"])) == [broken, (str(val_video), "missing")]
