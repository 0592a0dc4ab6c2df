"""``benchmarks.saved_memory`` counts on the meta device exactly what a real forward pass keeps for backward.

The README's memory tables come from that count; here it is checked against the storages a real CPU
forward pass keeps, with attention on PyTorch's math path (the path the meta device takes).
"""

from __future__ import annotations

import json
import time

import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import adaptkit
from benchmarks import checkout_ratio, frame_attention, profile_step, saved_memory, train_cost

MODEL = "vit_tiny_patch16_224"


def _real_saved_bytes(strategy: str, options: dict, checkpointing: bool | str, batch: int, frames: int,
                      image_size: int) -> int:
    torch.manual_seed(0)
    image_model = timm.create_model(MODEL, img_size=image_size)
    video_model = adaptkit.inject(image_model, strategy, num_frames=frames, num_classes=400, **options).train()
    video_model.set_grad_checkpointing(checkpointing)
    params = {p.untyped_storage()._cdata for p in video_model.parameters()}
    kept: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            kept[storage._cdata] = (t, storage.nbytes())  # the tensor is held so that no storage id is reused
        return t

    with sdpa_kernel(SDPBackend.MATH), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        video_model(torch.randn(batch, 3, frames, image_size, image_size))
    return sum(nbytes for _, nbytes in kept.values())


@pytest.mark.parametrize("strategy, options, checkpointing", [
    ("aim", {}, False),
    ("aim", {}, "none"),
    ("aim", {}, "temporal"),
    ("aim", {}, True),
    ("aim", {"temporal": False}, False),
    ("timesformer", {}, False),
    ("space-only", {}, False),
])
def test_the_meta_count_equals_the_bytes_a_real_forward_keeps(strategy, options, checkpointing):
    batch, frames, image_size = 2, 3, 48
    meta = saved_memory.build_meta(strategy, options, checkpointing, frames, MODEL, image_size)
    counted = sum(entry[0] for entry in saved_memory.saved_tensors(meta, batch, frames, image_size))
    assert counted == _real_saved_bytes(strategy, options, checkpointing, batch, frames, image_size)


@pytest.mark.parametrize("checkpointing", ["none", False, "temporal", True])
def test_a_forward_keeps_no_more_memory_alive_than_the_count(checkpointing, monkeypatch):
    """An independent measure: the profiler's net bytes still allocated after one training forward pass. Saved-tensor
    hooks do not see a tensor that a checkpointed closure holds (the temporal norm's output did, 133 KB a block)."""
    batch, frames, image_size = 2, 3, 48
    meta = saved_memory.build_meta("aim", {}, checkpointing, frames, MODEL, image_size)
    counted = sum(entry[0] for entry in saved_memory.saved_tensors(meta, batch, frames, image_size))
    torch.manual_seed(0)
    video_model = adaptkit.inject(timm.create_model(MODEL, img_size=image_size), "aim", num_frames=frames,
                                  num_classes=400).train()
    video_model.set_grad_checkpointing(checkpointing)
    video = torch.randn(batch, 3, frames, image_size, image_size)
    regions = []
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: regions.append(1) or checkpoint(*a, **k))
    with sdpa_kernel(SDPBackend.MATH), torch.profiler.profile(profile_memory=True) as profile:
        logits = video_model(video)
    alive = sum(event.self_cpu_memory_usage for event in profile.events())
    # Beyond the count: the logits, each checkpointed region's saved CPU RNG state (5 KB), and the small tensors
    # autograd nodes hold (sizes, scalars), under 16 KB here.
    rng_states = len(regions) * torch.get_rng_state().nbytes
    assert counted <= alive < counted + logits.nbytes + rng_states + 16_000, (alive, counted, rng_states)


def test_the_cli_counts_the_model_frames_and_size_it_is_given(capsys, tmp_path):
    result = saved_memory.main(["--model", MODEL, "--frames", "3", "--image-size", "48", "--batch", "2",
                                "--rows", "aim", "--device", "cpu", "--top", "0", "--out", str(tmp_path / "m.json")])
    assert "vit_tiny_patch16_224, cpu fp32 step, 2 clips of 3x48^2" in capsys.readouterr().out
    exact = _real_saved_bytes("aim", {}, False, 2, 3, 48)
    assert result["aim"]["saved_gib"] == round(exact / 2**30, 2)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["rows"] == result and written["settings"] == {"model": MODEL, "clips": 2, "frames": 3,
                                                                 "image_size": 48}
    assert written["environment"]["date"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert written["environment"]["device"] == "meta (counts only): cpu fp32 step"


@pytest.mark.parametrize("module, argv, message", [
    (saved_memory, ["--model", "vit_tiny_patch16_22"], "timm has no model 'vit_tiny_patch16_22'"),
    (saved_memory, ["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (saved_memory, ["--top", "-1"], "argument --top: must be at least 0, got -1"),
    (saved_memory, ["--rows", "aim,nonsense"], "unknown rows ['nonsense']"),
    (saved_memory, ["--model", "resnet18"], "--model resnet18: adaptkit cannot adapt a timm.models.resnet.ResNet"),
    (train_cost, ["--model", "vit_tiny_patch16_22"], "timm has no model 'vit_tiny_patch16_22'"),
    (train_cost, ["--model", "resnet18"], "--model resnet18: adaptkit cannot adapt a timm.models.resnet.ResNet"),
    (train_cost, ["--rows", "nonsense"], "unknown rows ['nonsense']"),
    (train_cost, ["--image-size", "0"], "argument --image-size: must be at least 1, got 0"),
    (train_cost, ["--batch", "-1"], "argument --batch: must be at least 1, got -1"),
    (train_cost, ["--inference-batch", "0"], "argument --inference-batch: must be at least 1, got 0"),
    (train_cost, ["--frames", "two"], "argument --frames: expected a whole number, got 'two'"),
    (train_cost, ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (train_cost, ["--device", "bogus"], "--device 'bogus' is not a device"),
    (train_cost, ["--bogus"], "unrecognized arguments: --bogus"),
    (frame_attention, ["--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (frame_attention, ["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (frame_attention, ["--head-dim", "0"], "argument --head-dim: must be at least 1, got 0"),
    (frame_attention, ["--tokens", "-3"], "argument --tokens: must be at least 1, got -3"),
    (frame_attention, ["--warmup", "-1"], "argument --warmup: must be at least 0, got -1"),
    (frame_attention, ["--copy-mib", "1.5"], "argument --copy-mib: expected a whole number, got '1.5'"),
    (profile_step, ["--frames", "0"], "argument --frames: must be at least 1, got 0"),
    (profile_step, ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (profile_step, ["--batch", "-1"], "argument --batch: must be at least 1, got -1"),
    (profile_step, ["--top", "-1"], "argument --top: must be at least 0, got -1"),
    (checkout_ratio, [".", ".", "--repeats", "0"], "argument --repeats: must be at least 1, got 0"),
    (checkout_ratio, [".", ".", "--image-size", "0"], "argument --image-size: must be at least 1, got 0"),
])
def test_bad_arguments_are_a_usage_error(module, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line, no usage block
