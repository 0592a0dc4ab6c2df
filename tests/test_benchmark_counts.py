"""``benchmarks.saved_memory`` counts on the meta device exactly what a real forward pass keeps for backward.

The README's memory tables come from that count; here it is checked against the storages a real CPU
forward pass keeps, with attention on PyTorch's math path (the path the meta device takes).
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import adaptkit
from benchmarks import saved_memory, train_cost

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


def test_the_cli_counts_the_model_frames_and_size_it_is_given(capsys):
    result = saved_memory.main(["--model", MODEL, "--frames", "3", "--image-size", "48", "--batch", "2",
                                "--rows", "aim", "--device", "cpu", "--top", "0"])
    assert "vit_tiny_patch16_224, cpu, 2 clips of 3x48^2" in capsys.readouterr().out
    exact = _real_saved_bytes("aim", {}, False, 2, 3, 48)
    assert result["aim"]["saved_gib"] == round(exact / 2**30, 2)


@pytest.mark.parametrize("module, argv, message", [
    (saved_memory, ["--model", "vit_tiny_patch16_22"], "timm has no model 'vit_tiny_patch16_22'"),
    (saved_memory, ["--frames", "0"], "--frames must be at least 1"),
    (saved_memory, ["--rows", "aim,nonsense"], "unknown rows ['nonsense']"),
    (train_cost, ["--model", "vit_tiny_patch16_22"], "timm has no model 'vit_tiny_patch16_22'"),
    (train_cost, ["--rows", "nonsense"], "unknown rows ['nonsense']"),
])
def test_bad_arguments_are_a_usage_error(module, argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
