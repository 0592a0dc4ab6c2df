"""Gradient checkpointing, torch.compile without graph breaks, and CUDA bf16 / compile parity."""

from __future__ import annotations

import pytest
import torch

import adaptkit
from conftest import BACKBONES, randomize_trainable

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _model(backbone: str = "timm_vit", strategy: str = "aim", frames: int = 3):
    factory, size = BACKBONES[backbone]
    torch.manual_seed(0)
    vm = adaptkit.inject(factory(), strategy, num_frames=frames, num_classes=5)
    randomize_trainable(vm, std=0.2)
    return vm, size


@pytest.mark.parametrize("backbone", ["timm_vit", "open_clip_tower"])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(backbone):
    vm, size = _model(backbone)
    vm.eval()  # no dropout, so both runs see the same computation
    video = torch.randn(2, 3, 3, size, size)
    vm(video).sum().backward()
    grads = {n: p.grad.clone() for n, p in vm.named_parameters() if p.requires_grad}
    vm.zero_grad()
    vm.set_grad_checkpointing(True)
    out = vm(video)
    out.sum().backward()
    for name, p in vm.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backbone, strategy", [("timm_vit", "aim"), ("open_clip_tower", "aim"),
                                                ("timm_eva_rope", "aim"), ("timm_vit", "timesformer"),
                                                ("timm_swin", "st-adapter"), ("open_clip_tower", "zero-i2v")])
def test_compiles_as_one_graph(backbone, strategy):
    """fullgraph=True fails on any graph break in the adapted blocks' forward."""
    vm, size = _model(backbone, strategy)
    vm.eval()
    video = torch.randn(2, 3, 3, size, size)
    compiled = torch.compile(vm, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(video), vm(video), atol=1e-5, rtol=1e-5)


@CUDA
@pytest.mark.parametrize("backbone", ["timm_vit", "open_clip_tower", "timm_eva_rope"])
def test_cuda_bf16_autocast_and_compile_match_eager_fp32(backbone):
    vm, size = _model(backbone)
    vm = vm.cuda().eval()
    video = torch.randn(2, 3, 3, size, size, device="cuda")
    with torch.no_grad():
        reference = vm(video)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = vm(video)
        compiled = torch.compile(vm, fullgraph=True)(video)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), reference, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(compiled, reference, atol=1e-4, rtol=1e-4)


@CUDA
def test_cuda_training_step_under_bf16_updates_only_trainables():
    vm, size = _model("timm_vit")
    vm = vm.cuda().train()
    frozen = {n: p.clone() for n, p in vm.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in vm.parameters() if p.requires_grad], lr=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = vm(torch.randn(2, 3, 3, size, size, device="cuda")).float().logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in vm.named_parameters() if not p.requires_grad)
