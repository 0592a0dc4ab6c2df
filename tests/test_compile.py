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
@pytest.mark.cuda
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
@pytest.mark.cuda
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


@pytest.mark.parametrize("backbone, strategy", [("timm_vit", "aim"), ("open_clip_tower", "aim"),
                                                ("timm_vit", "timesformer")])
def test_temporal_checkpointing_gives_identical_gradients(backbone, strategy):
    """Recomputing only the temporal branches changes where activations come from, not the numbers."""
    vm, size = _model(backbone, strategy)
    vm.eval()
    video = torch.randn(2, 3, 3, size, size)
    vm(video).sum().backward()
    grads = {n: p.grad.clone() for n, p in vm.named_parameters() if p.requires_grad}
    vm.zero_grad()
    vm.set_grad_checkpointing("temporal")
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = vm(video)
    out.sum().backward()
    for name, p in vm.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, grads[name]), name
    vm.set_grad_checkpointing(False)
    kept: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
        vm(video)
    assert sum(saved) < sum(kept)


def test_grad_checkpointing_modes_are_checked():
    vm, _ = _model()
    with pytest.raises(ValueError, match="True, False, 'temporal' or 'none'"):
        vm.set_grad_checkpointing("spatial")
    vm.set_grad_checkpointing("temporal")
    assert all(b.checkpoint_temporal for b in vm.family.blocks())
    vm.set_grad_checkpointing(True)
    assert not any(b.checkpoint_temporal for b in vm.family.blocks())


def test_compiles_as_one_graph_with_temporal_checkpointing():
    vm, size = _model()
    vm.eval().set_grad_checkpointing("temporal")  # eval: no dropout; autograd still records, so it checkpoints
    video = torch.randn(2, 3, 3, size, size)
    compiled = torch.compile(vm, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(video), vm(video), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dynamic", [None, True])
def test_a_compiled_training_step_follows_new_batch_sizes(dynamic):
    """Automatic dynamic shapes (the default) work as they are. dynamic=True also makes module floats (norm eps)
    symbolic, which PyTorch cannot yet pass into the checkpointed regions of the default mode ('does not belong to
    this Graph'); the README's workaround, specialize_float, is what this checks."""
    vm, size = _model()
    vm.eval()
    compiled = torch.compile(vm, backend="aot_eager", dynamic=dynamic)
    with torch._dynamo.config.patch(specialize_float=True):
        for batch in (2, 3):
            video = torch.randn(batch, 3, 3, size, size)
            _, eager = _loss_and_grads(vm, vm, video)
            _, traced = _loss_and_grads(compiled, vm, video)
            for name, grad in eager.items():
                torch.testing.assert_close(traced[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def _loss_and_grads(model, vm, video):
    loss = model(video).float().logsumexp(-1).mean()
    trainable = [(n, p) for n, p in vm.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in trainable])
    return loss, dict(zip([n for n, _ in trainable], grads, strict=True))


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kernel", ["per-frame", "tiled"])
@pytest.mark.parametrize("backbone", ["timm_vit", "open_clip_tower", "swin"])
def test_cuda_frame_attention_kernel_matches_the_cpu_path_in_a_training_step(backbone, kernel, monkeypatch, request):
    """AIM on CUDA (each Triton kernel for attention over frames) vs on CPU (PyTorch path), float32.

    Swin brings the relative temporal bias and its gradient. Tolerance 1e-4: float32 throughout
    (TF32 off), only summation orders differ.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from adaptkit.layers import set_frame_attention_kernel

    previous = set_frame_attention_kernel(kernel)
    request.addfinalizer(lambda: set_frame_attention_kernel(previous))

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    if backbone == "swin":
        from test_swin import tiny_swin

        torch.manual_seed(0)
        vm, size = adaptkit.inject(tiny_swin("v1"), "aim", num_frames=4, num_classes=5, temporal_blocks="all"), 32
        randomize_trainable(vm, std=0.2)
    else:
        vm, size = _model(backbone, frames=4)
    vm.eval()  # deterministic; autograd still records
    video = torch.randn(2, 3, 4, size, size)
    cpu_loss, cpu_grads = _loss_and_grads(vm, vm, video)
    vm.cuda()
    with FlopCounterMode(display=False) as counter:
        loss, grads = _loss_and_grads(vm, vm, video.cuda())
    assert any("frame_attention" in str(op) for op in counter.get_flop_counts()["Global"]), "kernel not used"
    torch.testing.assert_close(loss.cpu(), cpu_loss, atol=1e-4, rtol=1e-4)
    for name, grad in grads.items():
        torch.testing.assert_close(grad.cpu(), cpu_grads[name], atol=1e-4, rtol=1e-4, msg=name)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("backbone", ["timm_vit", "open_clip_tower"])
def test_cuda_compiled_training_step_has_no_graph_break_and_matches_eager(backbone):
    vm, size = _model(backbone, frames=4)
    vm = vm.cuda().eval()
    video = torch.randn(2, 3, 4, size, size, device="cuda")
    compiled = torch.compile(vm, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, grads = _loss_and_grads(vm, vm, video)
        compiled_loss, compiled_grads = _loss_and_grads(compiled, vm, video)
    torch.testing.assert_close(compiled_loss, loss, atol=2e-2, rtol=2e-2)
    for name, grad in grads.items():
        scale = grad.abs().max().clamp(min=1e-3)
        torch.testing.assert_close(compiled_grads[name] / scale, grad / scale, atol=5e-2, rtol=5e-2, msg=name)
