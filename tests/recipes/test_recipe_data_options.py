"""Recipe data options: the pre-decoded frame cache (one command, read by training and multi-view evaluation) and
GPU decoding (a clear one-line refusal where it cannot run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recipe_fixtures import video_config, video_dataset, video_folder  # noqa: F401 - pytest fixtures
from recipes import cli, train


def test_frame_cache_command_then_train_and_evaluate_from_it(
    video_config: Path, video_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path / "frames"
    assert cli.main(["cache", "--config", str(video_config), "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "cached 12 videos at short side 36" in out and "1 unreadable" in out and "broken.mp4" in out
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
