"""The ``adaptkit`` command: one-line errors with exit status 2, configs by name, ls / cp / cost, predict on one's own
video or a plain save_pretrained folder, offline weights, and the installed wheel working from any folder."""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
import timm
import torch

import adaptkit
from adaptkit.data import motion_class_names, write_corrupt_video, write_synthetic_videos
from recipe_fixtures import TINY_MODEL, VIDEO_CONFIG
from recipes import cli
from recipes._config import CONFIG_DIR, DEFAULT_CONFIG, list_configs, load_config
from recipes._data import frame_sampler

REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    status = cli.main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short synthetic run with 6 classes: its final/ folder."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", "--config", "synthetic_motion", f"train.output_dir={run_dir}", "train.max_steps=2",
                     "train.global_batch_size=4",
                     "data.batch_size=4", "data.synthetic.train_videos=8", "data.synthetic.val_videos=4",
                     "data.synthetic.num_classes=6", "data.num_frames=4", "eval.at_end=false", *TINY_MODEL]) == 0
    return run_dir / "final"


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["train", "optim.lr=abc"], "invalid value for config key 'optim.lr'"),
    (["train", "optim=5"], "invalid value for config key 'optim' in the command-line overrides"),
    (["train", "model.strategy=aimm"], "model.strategy: 'aimm' is not one of"),
    (["train", "model.grad_checkpointing=spatial"],
     "model.grad_checkpointing: 'spatial' is not one of [False, True, 'temporal', 'none']"),
    (["train", "--config", "k400_vitb16_8x16"],
     "data.train.annotations: {cwd}/data/kinetics400/annotations/train.csv does not exist. Set "
     "data.train.annotations=<annotation file> and data.train.root=<folder of the videos>"),
    (["train", "--config", "synthetic_motion", "model.allow_random_init=false"],
     "no pretrained tag and no model.checkpoint"),
    (["train", "model.checkpoint=missing.safetensors"], "model.checkpoint {cwd}/missing.safetensors does not exist"),
    (["train", "--config", "k400_vitb16_8x1"], "did you mean k400_vitb16_8x16"),
    (["train", "--nope"], "unrecognized arguments: --nope"),
    (["evaluate"], "the following arguments are required: --checkpoint"),
    (["predict", "--checkpoint", "."], "the video to predict on is missing"),
    (["predict", "v.mp4", "--checkpoint", ".", "--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["cp", "synthetic_motion", "nowhere/mine.yaml"], "folder nowhere does not exist"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["train", "--config", "synthetic_motion", "train.global_batch_size=6", "data.batch_size=4"],
     "train.global_batch_size: 6 is not a multiple of data.batch_size=4: set data.batch_size=3"),
    (["cache", "--config", "synthetic_motion", "--out", "frames", "--chunk-gib", "0"], "--chunk-gib must be > 0"),
    (["cache", "--config", "synthetic_motion", "--out", "/dev/null"], "--out /dev/null is a file"),
    (["train", "model.name=vit_tiny_patch16_22"],  # checked before the default config generates anything
     "timm has no model 'vit_tiny_patch16_22'; did you mean vit_tiny_patch16_224"),
    (["train", "--config", "synthetic_motion", "model.source=open_clip", "model.name=ViT-B-17"],
     "open_clip has no model 'ViT-B-17'; did you mean ViT-B-16"),
    (["train", "model.kwargs={depths:[2,2]}"],
     "override 'model.kwargs={{depths:[2,2]}}': the value is not valid YAML (found unexpected ':'); e.g. write"),
    (["train", "model.kwargs={depth:2}"],  # valid YAML: the key "depth:2" without a value
     "override 'model.kwargs={{depth:2}}': 'depth:2' is a key without a value; write a mapping with a space"),
    (["train", "train.device=cuda"] if not torch.cuda.is_available() else ["train", "train.device=tpu"],
     "train.device is 'cuda' but CUDA is not available" if not torch.cuda.is_available() else "train.device"),
], ids=["unknown_key", "wrong_type", "section_as_value", "unknown_strategy", "bad_checkpointing_mode", "missing_dataset", "missing_weights",
        "missing_weights_file", "unknown_config", "unknown_flag", "missing_checkpoint", "missing_video", "top_k_zero",
        "cp_into_a_missing_folder", "unknown_command", "batch_not_dividing", "cache_chunk_size", "cache_out_file",
        "unknown_timm_model", "unknown_open_clip_model", "override_not_yaml", "override_glued_key", "cuda_without_cuda"])
def test_errors_are_one_line_with_exit_status_2(args: list[str], expected: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths resolve here; nothing may be written
    status, _, err = run_cli(args + ["train.num_threads=1"] if args[0] == "train" else args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"adaptkit {args[0]}: error: ") and expected.format(cwd=tmp_path.resolve()) in lines[0]
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [["ls"], ["--help"], ["train", "--help"]])
def test_a_reader_that_goes_away_stops_the_command_quietly(args: list[str]) -> None:
    # `adaptkit ls | head -1`: the pipe's read end is closed before anything is written, so every write fails.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "recipes.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              cwd=REPO, text=True, timeout=120)
    finally:
        os.close(write_end)
    # Nothing on stderr and no error status: 141 where a write failed, 0 where the help text was still buffered
    # when the command exited.
    assert done.stderr == "" and done.returncode in (0, cli.EXIT_BROKEN_PIPE)


def test_command_logging_follows_stderr_when_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in one process one after another (tests, notebooks): records go to the stderr of the moment,
    never to a stream an earlier command saw and that was since closed."""
    import io
    import logging

    from recipes._logging import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(is_main=True)
    logging.getLogger("recipes").warning("one")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("adaptkit.data").warning("two")
    assert second.getvalue().endswith("WARNING adaptkit.data: two\n")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="optim.lrr"):
        cli.main(["train", "optim.lrr=1", "--debug"])


def test_model_folder_errors_say_what_the_folder_is(trained: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    run_dir = trained.parent
    video = tmp_path / "clip.mp4"
    write_synthetic_videos(tmp_path / "v", 1, num_frames=8, size=32, num_classes=6)
    (tmp_path / "v" / motion_class_names(6)[0] / "video_00000.mp4").rename(video)
    cases = [
        (["predict", str(video), "--checkpoint", str(run_dir)], "is not a model folder: it has no "
                                                                "adapter_config.json"),
        (["predict", str(video), "--checkpoint", str(run_dir)], f"looks like a run folder: pass {trained}"),
        (["evaluate", "--checkpoint", str(tmp_path / "nowhere")], "does not exist"),
        (["evaluate", "--checkpoint", str(video)], "is a file, not a model folder"),
        (["predict", str(tmp_path), "--checkpoint", str(trained)], "is a folder, not a video file"),
        (["predict", str(tmp_path / "gone.mp4"), "--checkpoint", str(trained)], "gone.mp4 does not exist"),
    ]
    plain = tmp_path / "plain"
    (plain).mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (plain / name).write_bytes((trained / name).read_bytes())
    cases.append((["predict", str(video), "--checkpoint", str(plain)], "save_pretrained folder without a run config: "
                                                                        "name the image model and the sampling"))
    for args, expected in cases:
        status, _, err = run_cli(args, capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and expected in err, (args, err)


def test_a_crop_size_the_model_cannot_take_is_refused_before_evaluating(trained: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "never_read.mp4"
    video.write_bytes(b"not decoded: the check comes first")
    for command in (["evaluate"], ["predict", str(video)]):
        status, out, err = run_cli([*command, "--checkpoint", str(trained), "data.synthetic.size=64",
                                    "data.augment.crop_size=64", "data.augment.resize_size=64"], capsys)
        assert status == 2 and err.count("\n") == 1, err
        assert ("data.augment.crop_size=64: frame size 64x64 does not match the model's input size 32x32; set "
                "data.augment.crop_size (and data.augment.resize_size) to what it takes") in err
        assert "top-1" not in out


def test_a_corrupt_model_file_is_named(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "final"
    copy.mkdir()
    for file in trained.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    data = bytearray((copy / "image_model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "image_model.safetensors").write_bytes(bytes(data))
    status, _, err = run_cli(["evaluate", "--checkpoint", str(copy)], capsys)
    assert status == 2 and f"{copy / 'image_model.safetensors'} is corrupt" in err


def test_predict_says_which_frames_it_read(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 2, num_frames=20, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[1] / "video_00001.mp4"
    status, out, _ = run_cli(["predict", str(video), "--checkpoint", str(trained), "eval.num_clips=2"], capsys)
    # The run trained on 4 consecutive frames (dense, interval 1): predict reads 2 such test clips.
    indices = frame_sampler(load_config(trained / "config.yaml").data, num_clips=2, test_mode=True)(20)
    assert status == 0 and indices.shape == (2, 4)
    assert (f"{video}: read 2 clips of 4 frames every 1 (dense sampling), frames {indices.min()}-{indices.max()} of "
            "20, 32x32 (2 views)") in out
    assert "repeated" not in out and len([line for line in out.splitlines() if ". motion_" in line]) == 5


def test_predict_class_names_given_replace_the_folders(trained: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 1, num_frames=8, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[0] / "video_00000.mp4"
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"action {i}" for i in range(6)]))
    status, out, _ = run_cli(["predict", str(video), "--checkpoint", str(trained), "--classes", str(names),
                              "--top-k", "6"], capsys)
    assert status == 0 and sorted(re.findall(r"action \d", out)) == [f"action {i}" for i in range(6)]
    assert ". motion_" not in out  # the folder's own class names are not used


def test_predict_refuses_a_missing_class_names_file(trained: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    status, _, err = run_cli(["predict", "v.mp4", "--checkpoint", str(trained), "--classes",
                              str(tmp_path / "names.json")], capsys)
    assert status == 2 and err.strip() == (f"adaptkit predict: error: --classes {tmp_path / 'names.json'} is not a file "
                                           "(expected a JSON list or one class name per line) (--debug shows the "
                                           "traceback)")


def test_predict_reads_an_ssv2_style_label_map_and_refuses_other_json(trained: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 1, num_frames=8, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[0] / "video_00000.mp4"
    labels = tmp_path / "labels.json"  # SSv2's labels.json: template -> index as a string, in any order
    labels.write_text(json.dumps({f"Doing thing {i}": str(i) for i in reversed(range(6))}))
    status, out, _ = run_cli(["predict", str(video), "--checkpoint", str(trained), "--classes", str(labels),
                              "--top-k", "6"], capsys)
    assert status == 0 and sorted(re.findall(r"Doing thing \d", out)) == [f"Doing thing {i}" for i in range(6)]
    for content, expected in [({"a": "0", "b": "2"}, "the indices are not 0..1, each once"),
                              ({"a": "x"}, "an index is not an integer"),
                              ({"a": 0.7}, "an index is not an integer"),
                              ({"a": False}, "an index is not an integer"),
                              ({}, "names no classes"), ([], "names no classes"),
                              ([1, 2], "expected a JSON list of class names"),
                              ("[1,", "is not valid JSON")]:
        labels.write_text(content if isinstance(content, str) else json.dumps(content))
        status, out, err = run_cli(["predict", str(tmp_path / "never_read.mp4"), "--checkpoint", str(trained),
                                    "--classes", str(labels)], capsys)
        assert status == 2 and err.count("\n") == 1 and f"--classes {labels}" in err and expected in err, err


def test_evaluate_refuses_an_output_it_cannot_write_before_evaluating(trained: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a_file").write_text("")
    for output, expected in [(tmp_path, f"--output {tmp_path} is a folder; give a file path, e.g. "
                                        f"{tmp_path / 'eval_result.json'}"),
                             (tmp_path / "a_file" / "r.json", f"--output {tmp_path / 'a_file' / 'r.json'}: cannot "
                                                              "make its folder")]:
        status, out, err = run_cli(["evaluate", "--checkpoint", str(trained), "--output", str(output)], capsys)
        assert status == 2 and err.count("\n") == 1 and expected in err, err
        assert "top-1" not in out


def test_another_image_model_than_the_adapter_was_trained_on_is_named_in_one_line(trained: Path, tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 1, num_frames=8, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[0] / "video_00000.mp4"
    status, _, err = run_cli(["predict", str(video), "--checkpoint", str(trained), "model.kwargs.act_layer=quick_gelu"],
                             capsys)
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert status == 2 and lines == [
        f"adaptkit predict: error: --checkpoint {trained} was trained on another image model than its config.yaml and "
        "the overrides describe (activation: 'GELU' in the checkpoint, 'QuickGELU' here): give the config it was trained with (--debug "
        "shows the traceback)"]


def test_weights_that_are_not_a_weights_file_are_said_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "notes.pt"
    weights.write_text("hello")
    status, _, err = run_cli(["train", "--config", "synthetic_motion", f"model.checkpoint={weights}",
                              f"train.output_dir={tmp_path / 'run'}", *TINY_MODEL], capsys)
    assert status == 2 and f"could not load model.checkpoint {weights} into vit_tiny_patch16_224: not a readable " \
                           "safetensors or PyTorch weights file (" in err


def test_predict_notes_repeated_frames_of_a_short_video(trained: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    write_synthetic_videos(tmp_path, 1, num_frames=3, size=32, num_classes=6)
    video = tmp_path / motion_class_names(6)[0] / "video_00000.mp4"
    status, out, _ = run_cli(["predict", str(video), "--checkpoint", str(trained)], capsys)
    assert status == 0 and "frames 0-2 of 3" in out
    assert "note: the video has only 3 frames, fewer than a clip spans: frames were repeated" in out


def test_a_run_on_relative_paths_is_usable_from_another_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths mean the folder the command runs in; the run records them absolute.
    from safetensors.torch import save_file

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    image_model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                    num_heads=2)
    (project / "weights").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in image_model.state_dict().items()}, str(project / "weights" / "vit.pt"
                                                                                 ".safetensors"))
    write_synthetic_videos(project / "videos", 1, num_frames=8, size=32, num_classes=6)
    monkeypatch.chdir(project)
    assert cli.main(["train", "--config", "synthetic_motion", "train.output_dir=run", "train.max_steps=1",
                     "train.global_batch_size=4", "data.batch_size=4", "data.synthetic.train_videos=4",
                     "data.synthetic.val_videos=4", "data.synthetic.num_classes=6", "data.num_frames=4",
                     "eval.at_end=false", "model.checkpoint=weights/vit.pt.safetensors", "model.kwargs.weight_init=",
                     *TINY_MODEL]) == 0
    assert load_config(project / "run" / "final" / "config.yaml").model.checkpoint == str(
        project / "weights" / "vit.pt.safetensors")
    capsys.readouterr()
    monkeypatch.chdir(elsewhere)
    video = project / "videos" / motion_class_names(6)[0] / "video_00000.mp4"
    status, out, err = run_cli(["predict", str(video), "--checkpoint", str(project / "run" / "final")], capsys)
    assert status == 0 and f"{video}: read" in out, err
    assert list(elsewhere.iterdir()) == []  # and nothing was written where it ran


@pytest.fixture
def plain_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """The user's own AIM adapter (4 classes) in a plain save_pretrained folder, on local image weights; returns the
    folder and the arguments naming the image model (a copy of the demo config plus overrides)."""
    from safetensors.torch import save_file

    image_model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1,
                                    num_heads=2)
    weights = tmp_path / "image.safetensors"
    save_file({k: v.contiguous() for k, v in image_model.state_dict().items()}, str(weights))
    adaptkit.inject(image_model, "aim", num_frames=4, num_classes=4).save_pretrained(tmp_path / "adapter")
    config = tmp_path / "mine.yaml"
    assert cli.main(["cp", "synthetic_motion", str(config)]) == 0
    return tmp_path / "adapter", [
        "--config", str(config), f"model.checkpoint={weights}", "model.allow_random_init=false",
        "model.kwargs.embed_dim=32", "model.kwargs.depth=1", "model.kwargs.num_heads=2", "model.kwargs.weight_init=",
        "data.num_frames=4", "model.options.temporal_in=null", "model.options.scale=null",
    ]


def test_predict_with_a_plain_save_pretrained_folder(plain_folder: tuple[Path, list[str]], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    folder, naming = plain_folder
    (tmp_path / "classes.txt").write_text("left\nright\nup\ndown\n")
    write_synthetic_videos(tmp_path / "videos", 1, num_frames=12, size=32, num_classes=2)
    video = next((tmp_path / "videos").rglob("*.mp4"))
    status, out, err = run_cli(["predict", str(video), "--checkpoint", str(folder), "--classes",
                                str(tmp_path / "classes.txt"), "data.frame_interval=3", *naming], capsys)
    assert status == 0, err
    config = naming[1]
    indices = frame_sampler(load_config(config, ["data.num_frames=4", "data.frame_interval=3"]).data,
                            test_mode=True)(12)
    assert f"read 1 clip of 4 frames every 3 (dense sampling), frames {indices.min()}-{indices.max()} of 12" in out
    assert sorted(line.split()[1] for line in out.splitlines() if line.lstrip()[:2] in ("1.", "2.", "3.", "4.")) == \
        ["down", "left", "right", "up"]


def test_evaluate_a_plain_save_pretrained_folder(plain_folder: tuple[Path, list[str]], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    folder, naming = plain_folder
    output = tmp_path / "result.json"
    status, out, err = run_cli(["evaluate", "--checkpoint", str(folder), "--output", str(output),
                                "data.synthetic.val_videos=4", *naming], capsys)
    assert status == 0, err
    assert "strategy aim, 4 classes, views 4x1x1, 4 videos" in out and "chance 25.0%" in out
    assert json.loads(output.read_text())["num_videos"] == 4


def test_configs_by_name_ls_and_cp(tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, _ = run_cli(["ls"], capsys)
    assert status == 0 and list_configs() == sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert [line.split()[0] for line in out.splitlines()[:len(list_configs())]] == list_configs()
    assert re.search(rf"^{DEFAULT_CONFIG} +\(default\) The embedded benchmark", out, re.MULTILINE)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["cp", "k400_vitb16_8x16", "."]) == 0
    copy = tmp_path / "k400_vitb16_8x16.yaml"
    shipped = (CONFIG_DIR / "k400_vitb16_8x16.yaml").read_text().splitlines(keepends=True)
    assert shipped[0] == "# adaptkit train --config k400_vitb16_8x16\n"
    # The copy's first line is the command that runs the copy; the rest is the shipped file.
    assert copy.read_text().splitlines(keepends=True) == ["# adaptkit train --config k400_vitb16_8x16.yaml\n",
                                                          *shipped[1:]]
    status, _, err = run_cli(["cp", "k400_vitb16_8x16", "."], capsys)
    assert status == 2 and "exists; pass --force" in err
    # A local file wins over the shipped config of the same name, so the copy can be edited in place.
    copy.write_text(copy.read_text().replace("name: k400_vitb16_8x16", "name: my_edit"))
    assert load_config("k400_vitb16_8x16.yaml").name == "my_edit"
    assert load_config("k400_vitb16_8x16").name == "k400_vitb16_8x16"


def test_cost_prints_every_strategy(capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["cost", "test_vit", "--frames", "4", "--classes", "10", "--views", "2"], capsys)
    assert status == 0
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(adaptkit.list_strategies()) <= set(rows)
    video_model = adaptkit.inject(timm.create_model("test_vit"), "aim", num_frames=4, num_classes=10)
    total, tunable = adaptkit.count_parameters(video_model)
    gmacs = adaptkit.count_flops(video_model, image_size=160)
    assert rows["aim"] == f"| aim | {total / 1e6:.2f} | {tunable / 1e6:.3f} | {gmacs:.1f} | {2 * gmacs:.1f} |"


def test_cost_builds_the_model_for_the_image_size_asked(capsys: pytest.CaptureFixture) -> None:
    """--image-size on a fixed-size model (test_vit: 160 px) counts that model built for the size, not a refusal."""
    status, out, err = run_cli(["cost", "test_vit", "--strategy", "aim", "--frames", "4", "--image-size", "96"], capsys)
    assert status == 0, err
    video_model = adaptkit.inject(timm.create_model("test_vit", img_size=96), "aim", num_frames=4, num_classes=400)
    total, _ = adaptkit.count_parameters(video_model)
    gmacs = adaptkit.count_flops(video_model, image_size=96)
    row = next(line for line in out.splitlines() if line.startswith("| aim "))
    assert row.split("|")[2].strip() == f"{total / 1e6:.2f}" and row.split("|")[4].strip() == f"{gmacs:.1f}"
    assert "frames of 96x96" in out


def test_cost_of_a_config_uses_its_model_strategy_and_views(capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["cost", "--config", "ssv2_vitl14_32f"], capsys)
    assert status == 0 and "32x1x3 views" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) == {"strategy", "aim"}
    tunable, gmacs = float(rows["aim"].split("|")[3]), float(rows["aim"].split("|")[5])
    assert tunable == pytest.approx(50.668, abs=1e-3) and gmacs == pytest.approx(11541.3, abs=0.1)  # Table 3: 50M, 11508
    status, _, err = run_cli(["cost", "--config", "ssv2_vitl14_32f", "--strategy", "lora"], capsys)
    assert status == 2 and "drop --strategy" in err and "Traceback" not in err
    status, _, err = run_cli(["cost", "--config", "ssv2_vitl14_32f", "--frames", "16"], capsys)
    assert status == 2 and "drop --frames" in err
    status, _, err = run_cli(["cost"], capsys)
    assert status == 2 and "name an image model" in err
    # Overrides change the config's model as they would for train: ST-Adapter on the same ViT-L at 16 frames.
    status, out, _ = run_cli(["cost", "--config", "ssv2_vitl14_32f", "model.strategy=st-adapter", "model.options={}",
                              "data.num_frames=16"], capsys)
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert status == 0 and "16x1x3 views" in out and set(rows) == {"strategy", "st-adapter"}
    status, _, err = run_cli(["cost", "--config", "ssv2_vitl14_32f", "vit_base_patch16_224"], capsys)
    assert status == 2 and "'vit_base_patch16_224' is not of the form key=value" in err


def test_cost_lists_the_merged_deployment_and_open_clip_models(capsys: pytest.CaptureFixture) -> None:
    status, out, _ = run_cli(["cost", "ViT-B-16", "--source", "open_clip"], capsys)
    assert status == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in out.splitlines() if line.startswith("| ")}
    assert rows["aim"] == [" 96.76 ", " 10.967 ", " 202.1 ", " 606.3 "]  # the timm ViT-B/16 row, the paper's 606
    # zero-i2v deploys merged: the plain image model's parameters (and its head) and GMACs, as the linear probe.
    assert rows["zero-i2v merged"][0] == rows["linear-probe"][0] and rows["zero-i2v merged"][2:] == rows[
        "linear-probe"][2:]
    assert "aim merged" not in rows


@pytest.mark.parametrize(("args", "expected"), [
    (["--frames", "0"], "--frames must be a positive integer, got 0"),
    (["--image-size", "0"], "--image-size must be a positive integer, got 0"),
    (["--views", "-1"], "--views must be a positive integer, got -1"),
    (["--strategy", "aim", "ratioo=0.5"], "unknown option(s) ['ratioo'] for strategy 'aim'"),
], ids=["frames", "image_size", "views", "option"])
def test_cost_refuses_bad_arguments_without_printing_a_table(args: list[str], expected: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    status, out, err = run_cli(["cost", "test_vit", *args], capsys)
    assert status == 2 and out == "" and expected in err and err.count("\n") == 1


def test_cost_of_a_model_no_strategy_takes_is_an_error(capsys: pytest.CaptureFixture) -> None:
    status, out, err = run_cli(["cost", "resnet18"], capsys)
    assert status == 2 and out == "" and "adaptkit cannot adapt a timm.models.resnet.ResNet" in err
    status, out, _ = run_cli(["cost", "vit_small_patch14_reg4_dinov2"], capsys)  # a layer scale: no zero-i2v
    assert status == 0 and "| zero-i2v | not for this model: strategy 'zero-i2v' cannot fold" in out


def test_offline_pretrained_weights_fail_fast(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    for env, reason in ((("HF_HUB_OFFLINE", "1"), "HF_HUB_OFFLINE is set"),
                        (("HF_ENDPOINT", "http://127.0.0.1:9"), "127.0.0.1 is unreachable")):
        with monkeypatch.context() as patch:
            patch.setenv(*env)
            if env[0] == "HF_ENDPOINT":
                patch.delenv("HF_HUB_OFFLINE", raising=False)
                patch.setattr(constants, "HF_HUB_OFFLINE", False)
            start = time.perf_counter()
            status, _, err = run_cli(["train", "--config", "synthetic_motion", "model.name=vit_tiny_patch16_224.augreg_in21k",
                                      "model.allow_random_init=false", f"train.output_dir={tmp_path / 'run'}"], capsys)
            assert time.perf_counter() - start < 10
            assert status == 2 and reason in err and "model.checkpoint=path/to/weights.safetensors" in err
    assert not (tmp_path / "run").exists()


def test_the_module_alias_gives_one_line_errors_from_any_folder(tmp_path: Path) -> None:
    # A real process: the exit status and everything on stderr (`adaptkit` itself is checked by the wheel test).
    process = subprocess.run([sys.executable, "-m", "recipes.train", "optim.lrr=1"], cwd=tmp_path, capture_output=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, text=True, timeout=120)
    assert process.returncode == 2 and process.stderr.count("\n") == 1, process.stderr
    assert "unknown config key 'optim.lrr'" in process.stderr


@pytest.mark.slow
def test_the_wheel_installs_a_working_command(tmp_path: Path) -> None:
    """A real wheel (recipes and configs inside), installed non-editable in a fresh venv, run from another folder."""
    wheels = tmp_path / "wheels"
    # Build offline with this environment's setuptools when it is recent enough; otherwise pip fetches it.
    try:
        from importlib.metadata import version

        isolation = [] if int(version("setuptools").split(".")[0]) < 77 else ["--no-build-isolation"]
    except Exception:  # noqa: BLE001 - setuptools absent (a fresh Python 3.12 venv)
        isolation = []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", str(REPO), "-w", str(wheels)],
                   check=True, timeout=300, cwd=tmp_path)
    wheel = next(wheels.glob("adaptkit-*.whl"))
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    # torch & co. come from this interpreter's site-packages (a venv or not), listed after the new venv's own.
    packages = subprocess.run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    (Path(packages) / "outer_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def adaptkit_cmd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([bin_dir / "adaptkit", *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)

    where = subprocess.run([bin_dir / "python", "-c", "import adaptkit, recipes; print(adaptkit.__file__); "
                            "print(recipes.__file__)"], cwd=work, env=env, capture_output=True, text=True, check=True)
    assert all(str(tmp_path / "venv") in line for line in where.stdout.splitlines()), where.stdout
    listed = adaptkit_cmd("ls")
    assert listed.returncode == 0 and "k400_vitb16_8x16" in listed.stdout and DEFAULT_CONFIG in listed.stdout
    trained = adaptkit_cmd("train", "--config", "synthetic_motion", "train.max_steps=2", "data.synthetic.val_videos=8",
                           *TINY_MODEL)
    assert trained.returncode == 0, trained.stderr
    assert (work / "runs" / "synthetic_motion" / "final" / "adapter_model.safetensors").is_file()
    failed = adaptkit_cmd("train", "--config", "k400_vitb16_8x16")
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "data.train.annotations" in failed.stderr


def test_recipes_use_only_the_public_api() -> None:
    """No recipe imports a private adaptkit module (``adaptkit._io`` and the like) or a private name."""
    import ast

    for path in sorted((REPO / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("adaptkit"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (path.name, node.module)
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, (path.name, node.module, private)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("adaptkit") and "._" in a.name for a in node.names), path.name


def test_evaluate_refuses_data_whose_classes_the_head_does_not_have(plain_folder: tuple[Path, list[str]],
                                                                    capsys: pytest.CaptureFixture) -> None:
    folder, naming = plain_folder  # a 4-class head; the data has 6 classes, so labels 4 and 5 could never be right
    status, out, err = run_cli(["evaluate", "--checkpoint", str(folder), "data.synthetic.val_videos=4",
                                "data.synthetic.num_classes=6", *naming], capsys)
    assert status == 2 and "Traceback" not in err
    assert f"the evaluation data has 6 classes but {folder}'s head has 4: evaluate it on data with the classes it " \
        "was trained on" in err.strip().splitlines()[-1]


PLUGIN = '''
import dataclasses

import torch
from torch import nn

import adaptkit
from adaptkit.strategies import StrategyContext, check_range


@adaptkit.register_strategy
@dataclasses.dataclass
class NormBiasConfig(adaptkit.StrategyConfig):
    """A user's strategy: train the final norm (a copy) and the head."""

    name = "test-plugin-norm"
    scale: float = 1.0

    def validate(self) -> None:
        check_range(self, "scale", 0.0, 10.0)

    def apply(self, context: StrategyContext) -> None:
        for path in context.family.final_norm_paths():
            context.train_copy_of(path)
'''


def test_a_strategy_of_your_own_runs_through_the_recipes_by_its_module(tmp_path: Path, monkeypatch, capsys) -> None:
    """`imports` names the user's module: train finds the strategy, and evaluate (a new config load) imports it too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test (the config adds the folder if missing)
    monkeypatch.delitem(sys.modules, "my_plugin_strategy", raising=False)  # imported afresh: it registers again
    (tmp_path / "my_plugin_strategy.py").write_text(PLUGIN)
    run_dir = tmp_path / "run"
    args = ["train", "--config", "synthetic_motion", *TINY_MODEL, f"train.output_dir={run_dir}", "train.max_steps=2",
            "train.global_batch_size=4", "data.batch_size=4", "data.synthetic.train_videos=8",
            "data.synthetic.val_videos=4", "data.num_frames=2", "eval.batch_size=4",
            "model.strategy=test-plugin-norm", "model.options={}"]
    assert cli.main(args) == 2  # not registered before its module is imported
    assert "'test-plugin-norm' is not one of" in capsys.readouterr().err
    assert cli.main(args + ["imports=[my_plugin_strategy]"]) == 0
    saved = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    assert saved["strategy"] == "test-plugin-norm"
    assert f"imports:\n- {tmp_path / 'my_plugin_strategy.py'}" in (run_dir / "config.yaml").read_text()  # absolute
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # evaluate from another folder, in a process that has not imported the module
    monkeypatch.delitem(sys.modules, "my_plugin_strategy")
    monkeypatch.syspath_prepend(str(elsewhere))
    sys.path.remove(str(tmp_path))
    from adaptkit.strategies import base as strategies_base

    del strategies_base._STRATEGIES["test-plugin-norm"]
    assert cli.main(["evaluate", "--checkpoint", str(run_dir / "final"), "--output", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["top1"] is not None
    assert cli.main(args + ["imports=[no_such_module_here]"]) == 2
    assert "imports: cannot import 'no_such_module_here' (ModuleNotFoundError" in capsys.readouterr().err


def test_a_control_run_can_be_evaluated_and_predicted_from_its_own_folder(tmp_path: Path) -> None:
    """A linear-probe control records `options: {head_dropout: ...}`; reading it back must not add drop_path."""
    run_dir = tmp_path / "run"
    args = ["train", "--config", "synthetic_motion", *TINY_MODEL, f"train.output_dir={run_dir}", "train.max_steps=2",
            "train.global_batch_size=4", "data.batch_size=4", "data.synthetic.train_videos=8",
            "data.synthetic.val_videos=4", "data.num_frames=2", "eval.batch_size=4",
            "controls=[{strategy: linear-probe, options: {head_dropout: 0.0}}]"]
    assert cli.main(args) == 0
    control = run_dir / "controls" / "linear-probe" / "final"
    assert cli.main(["evaluate", "--checkpoint", str(control), "--output", str(tmp_path / "c.json")]) == 0
    summary = json.loads((run_dir / "controls" / "linear-probe" / "train_summary.json").read_text())
    assert json.loads((tmp_path / "c.json").read_text())["top1"] == summary["eval"]["top1"]


@pytest.mark.parametrize("message", [
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 15000ms for "
    "recv operation to complete",
    "[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE) ran for 900000 ms",
])
def test_a_collective_timeout_names_the_setting_not_a_cpp_file(message: str, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    def timing_out(argv: list[str]) -> None:
        raise RuntimeError(message)

    monkeypatch.setitem(cli.COMMANDS, "train", (timing_out, "train"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    status, _, err = run_cli(["train"], capsys)
    assert status == 2
    assert err == ("adaptkit train: rank 1: timed out waiting for another process (train.dist_timeout_min): one "
                   "stopped answering or is far slower (stuck on storage, paused); raise train.dist_timeout_min if "
                   "that is expected (--debug shows the traceback)\n")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: no other process to wait for, the error as it is
    status, _, err = run_cli(["train"], capsys)
    assert status == 2 and err.startswith("adaptkit train: error: ") and "dist_timeout_min" not in err


def test_error_lines_of_other_ranks_name_the_rank(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    def failing(argv: list[str]) -> None:
        raise ValueError("data.batch_size must be at least 1")

    monkeypatch.setitem(cli.COMMANDS, "train", (failing, "train"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, prefix in (("1", "rank 1: "), ("0", "")):
        monkeypatch.setenv("RANK", rank)
        status, _, err = run_cli(["train"], capsys)
        assert (status, err) == (2, f"adaptkit train: {prefix}error: data.batch_size must be at least 1 "
                                    "(--debug shows the traceback)\n")


def test_predict_refuses_to_run_under_torchrun(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    status, out, err = run_cli(["predict", "video.mp4", "--checkpoint", "runs/x/final"], capsys)
    assert (status, out) == (2, "")
    assert err == ("adaptkit predict: error: predict reads one video in one process: run it without torchrun "
                   "(--debug shows the traceback)\n")


def test_no_readable_training_video_is_one_line_naming_the_skipped_videos(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i in range(4):
        write_corrupt_video(tmp_path / f"broken_{i}.mp4", kind="truncated")
    (tmp_path / "list.txt").write_text("".join(f"broken_{i}.mp4 {i % 2}\n" for i in range(4)))
    config = tmp_path / "broken.yaml"
    config.write_text(VIDEO_CONFIG.format(path=config, train=tmp_path / "list.txt", val=tmp_path / "list.txt",
                                          root=tmp_path, run_dir=tmp_path / "run", workers=0))
    # The same with DataLoader workers: tests/recipes/test_recipe_workers.py; a worker's error line: one_line below.
    status, _, err = run_cli(["train", "--config", str(config), "train.max_steps=1", "eval.at_end=false"], capsys)
    assert status == 2
    last = err.splitlines()[-1]  # log lines come first (the run removed its folder)
    assert last == ("adaptkit train: error: no readable video left: all 4 videos were skipped (4 corrupt or truncated: "
                    f"{tmp_path / 'broken_0.mp4'}, {tmp_path / 'broken_1.mp4'}, {tmp_path / 'broken_2.mp4'} and 1 more) "
                    "(--debug shows the traceback)"), last
    assert "Traceback" not in err and "RuntimeError" not in err  # the typed error's name is not shown


def test_one_line_gives_a_dataloader_workers_error_without_the_workers_traceback() -> None:
    worker = ("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
              '  File "x.py", line 3, in load\n    raise ValueError("bad frame\\nsee above")\nValueError: bad frame\n'
              "see above\n")
    assert cli.one_line(ValueError(worker)) == "bad frame see above (in DataLoader worker process 1)"
    empty = worker.replace("ValueError: bad frame\nsee above\n", "adaptkit.errors.NoReadableVideoError\n").replace(
        "Caught ValueError", "Caught NoReadableVideoError")
    assert cli.one_line(adaptkit.NoReadableVideoError(empty)) == "NoReadableVideoError (in DataLoader worker process 1)"
