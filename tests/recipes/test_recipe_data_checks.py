"""Checks a recipe makes on a real dataset copy before training: missing files found up front, their share and the
classes they empty reported, and too many refused (``data.max_missing_fraction``)."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest
import torch

from adaptkit.data import encode_video
from recipes._config import load_config
from recipes._data import load_split

HEADER = ["label", "youtube_id", "time_start", "time_end", "split"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    encode_video(path, torch.zeros(12, 3, 32, 32, dtype=torch.uint8))
    return path


def kinetics_split(folder: Path, clip: Path, rows: list[tuple[str, str]], present: set[str]) -> list[str]:
    """A Kinetics CSV of (label, youtube id) rows in ``folder`` and the videos of the ids in ``present``; returns
    the config overrides naming them."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.csv", "w", newline="") as file:
        csv.writer(file).writerows([HEADER, *[[label, yid, 0, 10, "train"] for label, yid in rows]])
    for _, yid in rows:
        if yid in present:
            shutil.copy(clip, videos / f"{yid}_000000_000010.mp4")
    classes = len({label for label, _ in rows})
    return [f"data.train.annotations={folder / 'train.csv'}", f"data.train.root={videos}",
            f"data.num_classes={classes}"]


def test_a_few_missing_videos_are_reported_and_left_out_of_training(tmp_path: Path, clip: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    rows = [("abseiling", f"a{i}") for i in range(10)] + [("air drumming", f"b{i}") for i in range(10)]
    overrides = kinetics_split(tmp_path, clip, rows, present={yid for _, yid in rows} - {"b3"})
    config = load_config("k400_vitb16_8x16", overrides)
    with caplog.at_level(logging.WARNING):
        annotations = load_split(config.data, config.data.train, "train")
    assert "data.train: 1 of 20 video files are missing (5.0%; e.g. " in caplog.text
    assert "b3_000000_000010.mp4" in caplog.text
    assert "left out of training" in caplog.text
    assert len(annotations.records) == 19 and all(Path(r.path).exists() for r in annotations.records)


def test_a_mostly_missing_split_is_refused_in_one_line_naming_the_key(tmp_path: Path, clip: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    # 3 of 4 listed videos absent, a whole class among them: the old check failed only when NONE existed.
    rows = [("abseiling", "a0"), ("air drumming", "b0"), ("air drumming", "b1"), ("air drumming", "b2")]
    overrides = kinetics_split(tmp_path, clip, rows, present={"a0"})
    config = load_config("k400_vitb16_8x16", overrides)
    with pytest.raises(ValueError) as refused:
        load_split(config.data, config.data.train, "train")
    message = str(refused.value)
    assert "\n" not in message and "3 of 4 video files are missing (75.0%" in message
    assert "b0_000000_000010.mp4" in message and "1 class(es) left without a video: 'air drumming'" in message
    assert "more than data.max_missing_fraction=0.1" in message and "set data.max_missing_fraction=0.75" in message

    config = load_config("k400_vitb16_8x16", [*overrides, "data.max_missing_fraction=0.75"])
    with caplog.at_level(logging.WARNING):
        annotations = load_split(config.data, config.data.train, "train")
    assert "3 of 4" in caplog.text and "'air drumming'" in caplog.text
    assert [r.video_id for r in annotations.records] == ["a0"] and annotations.classes == ["abseiling", "air drumming"]


def test_the_validation_split_keeps_its_missing_videos_for_the_evaluation_report(tmp_path: Path, clip: Path) -> None:
    rows = [("abseiling", f"a{i}") for i in range(20)]
    overrides = kinetics_split(tmp_path, clip, rows, present={yid for _, yid in rows} - {"a7"})
    overrides = [o.replace("data.train.", "data.val.") for o in overrides]
    config = load_config("k400_vitb16_8x16", overrides)
    annotations = load_split(config.data, config.data.val, "val", ["abseiling"])
    assert len(annotations.records) == 20  # evaluation marks a7 skipped and lists it in the result


def test_videos_under_another_extension_are_found_or_named_by_an_option(tmp_path: Path, clip: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Kinetics downloads kept as .mkv/.webm: found without any setting; data.options.extension names them."""
    rows = [("abseiling", f"a{i}") for i in range(4)]
    overrides = kinetics_split(tmp_path, clip, rows, present={yid for _, yid in rows})
    for video in (tmp_path / "videos").glob("*.mp4"):
        video.rename(video.with_suffix(".mkv"))
    config = load_config("k400_vitb16_8x16", overrides)
    with caplog.at_level(logging.INFO):
        found = load_split(config.data, config.data.train, "train")
    assert [Path(r.path).suffix for r in found.records] == [".mkv"] * 4
    assert "4 of 4 videos found under another extension" in caplog.text
    config = load_config("k400_vitb16_8x16", [*overrides, "data.options.extension=.mkv"])
    assert load_split(config.data, config.data.train, "train").records == found.records


def test_duplicate_rows_are_reported_and_dropped(tmp_path: Path, clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    overrides = kinetics_split(tmp_path, clip, [("abseiling", "a0")] * 2, present={"a0"})
    config = load_config("k400_vitb16_8x16", overrides)
    with caplog.at_level(logging.WARNING):
        annotations = load_split(config.data, config.data.train, "train")
    assert "1 duplicate lines dropped" in caplog.text and len(annotations.records) == 1


def test_the_check_cost_benchmark_counts_what_it_made(tmp_path: Path) -> None:
    from benchmarks import missing_files

    result = missing_files.main(["--rows", "40", "--present", "0.75", "--folder", str(tmp_path / "v"), "--repeats", "2",
                                 "--out", str(tmp_path / "r.json")])
    assert (result["rows"], result["present"]) == (40, 30) and result["seconds_warm"] >= 0
    assert (tmp_path / "r.json").is_file()
