"""``recipes.evaluate`` (multi-view, video ids in the result) and ``recipes.predict`` (top-5 of one file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptkit.data import (
    count_frames,
    encode_video,
    motion_class_names,
    motion_clip,
    write_corrupt_video,
    write_synthetic_videos,
)
from recipes import cli, evaluate, predict, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final/ folder of a short synthetic run with 6 motion classes and 4-frame clips."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train.main([
        "--config", "synthetic_motion", f"train.output_dir={run_dir}", "train.max_steps=3", "train.global_batch_size=4", "data.batch_size=4",
        "data.synthetic.train_videos=12", "data.synthetic.val_videos=6", "data.synthetic.num_classes=6",
        "data.num_frames=4", "model.kwargs.depth=1", "model.kwargs.embed_dim=32", "train.num_threads=1",
        "eval.at_end=false",
    ])
    return run_dir / "final"


def test_evaluate_saved_model_on_synthetic_data(trained: Path, tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    result = evaluate.main(["--checkpoint", str(trained), "--output", str(output)])
    assert result is not None and result.num_videos == 6 and result.views == "4x1x1"
    saved = json.loads(output.read_text())
    assert saved["video_ids"] == [f"synthetic_{i:05d}" for i in range(6)]
    assert saved["extra"]["checkpoint"] == str(trained)


def test_evaluate_multi_view_on_real_videos(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Real files of the model's classes, read as 2 temporal clips x 3 crops = 6 views per video.
    folder = tmp_path / "videos"
    write_synthetic_videos(folder, 6, num_frames=10, size=32, num_classes=6)
    write_corrupt_video(folder / "broken.mp4", kind="garbage")
    with open(folder / "list.txt", "a") as file:
        file.write("broken.mp4 0\n")
    result = evaluate.main([
        "--checkpoint", str(trained), "data.source=video", "data.format=video_list",
        f"data.val.annotations={folder / 'list.txt'}", f"data.val.root={folder}", "data.frame_interval=2",
        "eval.num_clips=2", "data.augment.test_crops=3", "data.num_workers=0", "eval.batch_size=3",
    ])
    assert result is not None and result.views == "4x2x3"
    assert result.num_videos == 6 and result.skipped_ids == ["broken"]
    assert result.video_ids == [f"{name}/video_{i:05d}" for i, name in enumerate(motion_class_names(6))]
    out = capsys.readouterr().out
    assert "chance 16.7%" in out and f"top-5 {100 * result.top5:.1f}%" in out and "broken.mp4" in out
    assert json.loads((trained / "eval_result.json").read_text())["video_ids"] == result.video_ids


def test_evaluating_other_views_keeps_the_earlier_result(trained: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "final"
    shutil.copytree(trained, checkpoint, ignore=shutil.ignore_patterns("eval_result*"))  # other tests evaluate it too
    folder = tmp_path / "videos"
    write_synthetic_videos(folder, 3, num_frames=8, size=32, num_classes=6)
    data = ["data.source=video", "data.format=video_list", f"data.val.annotations={folder / 'list.txt'}",
            f"data.val.root={folder}", "data.num_workers=0"]
    first = evaluate.main(["--checkpoint", str(checkpoint), *data])
    assert first is not None and first.views == "4x1x1"
    default = checkpoint / "eval_result.json"
    second = evaluate.main(["--checkpoint", str(checkpoint), *data, "eval.num_clips=2"])
    assert second is not None and second.views == "4x2x1"
    assert json.loads(default.read_text())["views"] == "4x1x1"  # kept
    assert json.loads((checkpoint / "eval_result_list_4x2x1.json").read_text())["views"] == "4x2x1"
    default.write_text(default.read_text().replace('"top1"', '"top1_before"', 1))
    evaluate.main(["--checkpoint", str(checkpoint), *data])  # the same evaluation again replaces its file
    assert "top1_before" not in default.read_text()
    assert sorted(path.name for path in checkpoint.glob("eval_result*")) == [
        "eval_result.json", "eval_result_list_4x2x1.json"]


def test_predict_prints_the_top5_classes(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 2, num_frames=8, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[1] / "video_00001.mp4"
    predictions = predict.main(["--checkpoint", str(trained), str(video)])
    out = capsys.readouterr().out
    assert len(predictions) == 5 and len({name for name, _ in predictions}) == 5
    probabilities = [p for _, p in predictions]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    for rank, (name, probability) in enumerate(predictions, start=1):
        assert f"{rank}. {name}" in out and f"{100 * probability:6.2f}%" in out
    assert {name for name, _ in predictions} <= set(motion_class_names(6))


def test_predict_probabilities_over_all_classes_sum_to_one(trained: Path, tmp_path: Path) -> None:
    write_synthetic_videos(tmp_path, 1, num_frames=4, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[0] / "video_00000.mp4"
    everything = predict.main(["--checkpoint", str(trained), str(video), "--top-k", "6"])
    assert sorted(name for name, _ in everything) == sorted(motion_class_names(6))
    assert sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)  # the softmax over all classes
    assert torch.tensor([p for _, p in everything]).min() >= 0


def test_predict_unreadable_file_is_a_clear_error(trained: Path, tmp_path: Path) -> None:
    broken = write_corrupt_video(tmp_path / "broken.mp4", kind="truncated")
    with pytest.raises(ValueError, match="cannot read .*broken.mp4"):
        predict.main(["--checkpoint", str(trained), str(broken)])



def _fails_mid_decode(path: Path) -> Path:
    """A valid mp4 whose later packets are overwritten: it opens and its frames are counted (header and index are
    whole), decoding fails part-way. (A truncated file is caught earlier, when its frames are counted.)"""
    encode_video(path, motion_clip(0, num_frames=32, size=32)[0])
    data = bytearray(path.read_bytes())
    body = data.index(b"mdat") + 4  # the packets: [body, body + size - 8)
    size = int.from_bytes(data[body - 8:body - 4], "big")
    later = body + 3 * (size - 8) // 4  # past the first pictures, which counting the frames decodes
    data[later:later + size // 10] = b"\xff" * (size // 10)
    path.write_bytes(data)
    return path


def test_predict_on_a_video_failing_mid_decode_says_so_in_one_line(trained: Path, tmp_path: Path) -> None:
    video = _fails_mid_decode(tmp_path / "cut.mp4")
    assert count_frames(video) == 32  # the failure comes from decoding, not from opening or counting
    done = subprocess.run([sys.executable, "-m", "recipes.cli", "predict", "--checkpoint", str(trained), str(video)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith(f"adaptkit predict: error: cannot read {video}: decoding failed"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

def test_an_adapter_without_its_random_backbone_is_refused(trained: Path, tmp_path: Path) -> None:
    # A plain save_pretrained folder of a run on a random backbone: the run's config would build new random weights.
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(trained / name, folder / name)
    write_synthetic_videos(tmp_path / "videos", 1, num_frames=8, size=32, num_classes=6)
    video = tmp_path / "videos" / motion_class_names(6)[0] / "video_00000.mp4"
    with pytest.raises(ValueError, match="has no saved image model .* builds a randomly initialised one"):
        predict.main(["--checkpoint", str(folder), "--config", str(trained / "config.yaml"), str(video)])
    shutil.copy(trained / "image_model.safetensors", folder / "image_model.safetensors")
    assert predict.main(["--checkpoint", str(folder), "--config", str(trained / "config.yaml"), str(video)])


def test_an_override_of_the_trained_strategy_or_its_options_is_refused(trained: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """The strategy and its options come from the folder's adapter_config.json: an override that differs would be
    dropped silently, so it is refused in one line; one that builds the same model (the strategy's default written
    out, a layers spec as recorded) evaluates."""
    write_synthetic_videos(tmp_path / "videos", 1, num_frames=8, size=32, num_classes=6)
    video = tmp_path / "videos" / motion_class_names(6)[0] / "video_00000.mp4"
    refused = {"model.strategy=st-adapter": "model.strategy=st-adapter (the checkpoint's is aim)",
               "model.options.ratio=0.5": "model.options.ratio=0.5 (the checkpoint's is 0.25)",
               "model.options.temporal=false": "model.options.temporal=false (the checkpoint's is True)",
               "model.options.kernel=[3,1,1]": "the checkpoint's strategy aim has no option kernel",
               "model.options.scale=null": "model.options.scale=0.5 (the checkpoint's is 1.0)",  # aim's default
               "model.options={}": "model.options.temporal_in=False (the checkpoint's is True)"}
    for override, said in refused.items():
        for command in (["evaluate", "--checkpoint", str(trained)],
                        ["predict", str(video), "--checkpoint", str(trained)]):
            assert cli.main([*command, override]) == 2
            err = capsys.readouterr().err
            assert said in err and "the strategy and its options come from the checkpoint folder" in err, err
            assert len(err.strip().splitlines()) == 1
    same = ["model.strategy=aim", "model.options.ratio=0.25", "model.options.layers=all"]
    assert cli.main(["evaluate", "--checkpoint", str(trained), "--output", str(tmp_path / "r.json"), *same]) == 0


def test_a_saved_random_backbone_under_another_architecture_is_named(trained: Path) -> None:
    # The run's own random backbone is loaded first: another depth or model is said in the config's terms, not as
    # load_state_dict's list of missing keys.
    for override, said in (("model.kwargs.depth=2", "depth: 1 in the checkpoint, 2 here"),
                           ("model.name=vit_small_patch16_224", ("architecture: 'vit_tiny_patch16_224' in the "
                                                                 "checkpoint, 'vit_small_patch16_224' here"))):
        with pytest.raises(ValueError, match="trained on another image model than its config.yaml") as error:
            evaluate.main(["--checkpoint", str(trained), override])
        assert said in str(error.value) and "give the config it was trained with" in str(error.value)
        assert "state_dict" not in str(error.value)


def test_views_that_synthetic_data_cannot_give_are_refused(trained: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    # A synthetic video is one clip at the model's length and size: 3 clips or 3 crops would be evaluated as 1x1.
    for views, said in ((["eval.num_clips=3"], "eval.num_clips=3: "),
                        (["data.augment.test_crops=3"], "data.augment.test_crops=3: "),
                        (["eval.num_clips=2", "data.augment.test_crops=3"],
                         "eval.num_clips=2 and data.augment.test_crops=3")):
        assert cli.main(["evaluate", "--checkpoint", str(trained), *views]) == 2
        err = capsys.readouterr().err
        assert said in err and "synthetic data (data.source=synthetic) has one view per video" in err, err
    run_dir = tmp_path / "run"  # training says it before it trains, and writes nothing
    assert cli.main(["train", "--config", str(trained / "config.yaml"), f"train.output_dir={run_dir}",
                     "eval.num_clips=3"]) == 2
    assert "eval.num_clips=3: synthetic data" in capsys.readouterr().err and not run_dir.exists()
    # Annotation files are not read either: evaluating "other.csv" must not evaluate the synthetic clips instead.
    assert cli.main(["evaluate", "--checkpoint", str(trained), "data.val.annotations=other.csv"]) == 2
    err = capsys.readouterr().err
    assert "data.val.annotations: is not read with data.source=synthetic" in err and err.count("\n") == 1
    assert not list(trained.glob("eval_result_other*"))
