"""The Triton kernels for attention over frames, against the PyTorch path (checks in ``frame_attention_checks``).

Without a GPU the kernels run through Triton's interpreter in a subprocess; with CUDA (tests
marked ``cuda``) they run compiled, in float32 and bfloat16, eager and under ``torch.compile``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="needs Triton")

import frame_attention_checks as checks  # noqa: E402
from adaptkit.layers import frame_attention_triton  # noqa: E402
from adaptkit.layers import set_frame_attention_kernel  # noqa: E402
from adaptkit.layers import attention  # noqa: E402
from adaptkit.layers.attention import attend_frames, frame_attention_reference  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_kernels_run_by_the_triton_interpreter_match_the_pytorch_path():
    """Random small shapes, strided inputs, with and without a bias: outputs and gradients (float32 vs float64)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "frame_attention_checks.py")], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "interpreted kernels: all checks passed" in result.stdout


def test_the_kernels_apply_only_on_cuda_to_short_clips_in_float_types():
    packed = torch.randn(1, 4, 2, 3, 2, 8)
    assert not frame_attention_triton.supports(packed)  # CPU: the PyTorch path
    if torch.cuda.is_available():
        assert frame_attention_triton.supports(packed.cuda())
        assert not frame_attention_triton.supports(packed.cuda().double())
        assert not frame_attention_triton.supports(torch.randn(1, 65, 2, 3, 2, 8, device="cuda"))


def test_an_unknown_kernel_or_tile_size_is_refused_in_one_line():
    packed = torch.randn(1, 4, 2, 3, 2, 8)
    with pytest.raises(ValueError, match="unknown frame-attention kernel 'flash'; expected one of per-frame, tiled"):
        frame_attention_triton.frame_attention(packed, None, 0.3, "flash")
    with pytest.raises(ValueError, match="block_rows must be a power of two"):
        frame_attention_triton.frame_attention(packed, None, 0.3, "tiled", block_rows=48)
    with pytest.raises(ValueError, match="expected one of per-frame, tiled, pytorch"):
        set_frame_attention_kernel("tiled ")


# Each refused before any launch (no interpreter needed), by the kernels' op and the PyTorch path alike.
_BAD_PACKED = [
    (torch.randn(1, 4, 2, 4, 2, 8), r"packed q/k/v must be \(B, T, N, 3, heads, d\), got shape \(1, 4, 2, 4, 2, 8\)"),
    (torch.randn(4, 2, 3, 2, 8), r"packed q/k/v must be \(B, T, N, 3, heads, d\), got shape \(4, 2, 3, 2, 8\)"),
    (torch.randint(0, 9, (1, 4, 2, 3, 2, 8), dtype=torch.int32), "packed q/k/v must be .*, got torch.int32"),
]
_BAD_BIASES = [(2, 5, 5), (3, 4, 4), (1, 2, 4, 4), (2, 4, 3)]  # for heads = 2, T = 4


@pytest.mark.parametrize("run", ["per-frame", "tiled", "reference"])
def test_packed_qkv_that_is_not_b_t_n_3_heads_d_in_a_float_type_is_refused_in_one_line(run):
    for packed, message in _BAD_PACKED:
        with pytest.raises(ValueError, match=message):
            if run == "reference":
                frame_attention_reference(packed, None, 0.3)
            else:
                frame_attention_triton.frame_attention(packed, None, 0.3, run)
    with pytest.raises(ValueError, match="packed q/k/v must be torch.float16 or torch.bfloat16 or torch.float32, got "
                                         "torch.float64"):
        frame_attention_triton.frame_attention(torch.randn(1, 4, 2, 3, 2, 8, dtype=torch.float64), None, 0.3)
    with pytest.raises(ValueError, match=r"must be \(B\*T, \*tokens, 3, heads, d\), got shape \(8, 2, 4, 2, 8\)"):
        attend_frames(torch.randn(8, 2, 4, 2, 8), 4, scale=0.3)


@pytest.mark.parametrize("run", ["per-frame", "tiled", "reference", "attend_frames", "attend_frames via a kernel"])
@pytest.mark.parametrize("bias_shape", _BAD_BIASES)
def test_a_bias_that_does_not_broadcast_to_heads_t_t_is_refused_naming_that_shape(run, bias_shape, monkeypatch):
    if run == "attend_frames via a kernel":  # as on CUDA: attend_frames hands the bias to the kernel's op
        monkeypatch.setattr(attention, "_kernel_for", lambda device, dropout: "per-frame")
        monkeypatch.setattr(attention._kernel, "supports", lambda packed: True)
        monkeypatch.setattr(attention, "frame_attention_reference", None)  # not the PyTorch path
    packed, bias = torch.randn(1, 4, 2, 3, 2, 8), torch.randn(bias_shape)
    message = f"shape (heads, T, T) = (2, 4, 4), or one that broadcasts to it; got torch.float32 {tuple(bias_shape)}"
    with pytest.raises(ValueError, match=re.escape(message)):
        if run == "reference":
            frame_attention_reference(packed, bias, 0.3)
        elif run.startswith("attend_frames"):
            attend_frames(packed.flatten(0, 1), 4, scale=0.3, bias=bias)
        else:
            frame_attention_triton.frame_attention(packed, bias, 0.3, run)


def test_both_paths_broadcast_a_bias_to_heads_t_t_with_its_gradient():
    """(T, T) and (1, T, T) act as the (heads, T, T) bias they expand to; the gradient keeps the bias's own shape.
    (The kernels' outputs for such biases are checked under the interpreter in ``frame_attention_checks``.)"""
    qkv = torch.randn(2 * 4, 3, 3, 2, 8, dtype=torch.float64)
    for shape in [(4, 4), (1, 4, 4), (2, 1, 4)]:
        bias = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        full = bias.detach().expand(2, 4, 4).clone().requires_grad_(True)
        out = attend_frames(qkv, 4, scale=0.3, bias=bias)
        torch.testing.assert_close(out, attend_frames(qkv, 4, scale=0.3, bias=full), rtol=0, atol=0)
        (grad,) = torch.autograd.grad(out.square().sum(), bias)
        (full_grad,) = torch.autograd.grad(attend_frames(qkv, 4, scale=0.3, bias=full).square().sum(), full)
        torch.testing.assert_close(grad, full_grad.sum_to_size(shape))


def test_the_kernel_choice_is_global_and_returns_the_previous_one():
    previous = set_frame_attention_kernel("tiled")
    try:
        assert previous == "per-frame"  # the default
        assert set_frame_attention_kernel("pytorch") == "tiled"
    finally:
        set_frame_attention_kernel(previous)


@pytest.mark.parametrize("choice", ["per-frame", "tiled", "pytorch"])
def test_the_choice_decides_the_kernel_on_cuda_only(choice):
    """The dispatch rule, without a GPU: the chosen Triton kernel on CUDA, the PyTorch path elsewhere."""
    previous = set_frame_attention_kernel(choice)
    try:
        expected = None if choice == "pytorch" else choice
        assert attention._kernel_for(torch.device("cuda", 0), 0.0) == expected
        assert attention._kernel_for(torch.device("cpu"), 0.0) is None
        assert attention._kernel_for(torch.device("cuda", 0), 0.1) is None  # dropout: PyTorch path
    finally:
        set_frame_attention_kernel(previous)


@pytest.mark.parametrize("choice", ["per-frame", "tiled"])
def test_cpu_tensors_take_the_pytorch_path_whatever_the_choice(choice, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernel was called on a CPU tensor")

    monkeypatch.setattr(attention._kernel, "frame_attention", refuse)
    previous = set_frame_attention_kernel(choice)
    try:
        qkv = torch.randn(2 * 4, 3, 3, 2, 8, dtype=torch.float64)
        out = attend_frames(qkv, 4, scale=0.3)
        expected = frame_attention_reference(qkv.reshape(2, 4, 3, 3, 2, 8), None, 0.3).reshape(8, 3, 16)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    finally:
        set_frame_attention_kernel(previous)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kernel", frame_attention_triton.KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frames, head_dim", [(8, 64), (16, 32), (32, 128), (5, 48)])
def test_cuda_kernels_match_the_pytorch_path(kernel, dtype, frames, head_dim):
    checks.check_against_reference(2, frames, 197, 3, head_dim, True, False, dtype, "cuda", kernel)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kernel", frame_attention_triton.KERNELS)
@pytest.mark.parametrize("with_bias, strided, block_rows", [(False, True, 0), (True, True, 0), (True, True, 128)])
def test_cuda_kernels_read_strided_inputs(kernel, with_bias, strided, block_rows):
    checks.check_against_reference(3, 8, 50, 2, 64, with_bias, strided, torch.float32, "cuda", kernel, block_rows)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kernel", frame_attention_triton.KERNELS)
def test_cuda_kernels_keep_only_what_backward_needs(kernel):
    checks.check_saved_for_backward("cuda", kernel)


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("kernel", frame_attention_triton.KERNELS)
def test_cuda_attend_frames_compiles_as_one_graph_through_the_kernels(kernel):
    qkv = torch.randn(2 * 8, 197, 3, 12, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    bias = torch.randn(12, 8, 8, device="cuda", requires_grad=True)

    def fn(qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return attend_frames(qkv, 8, scale=0.125, bias=bias)

    previous = set_frame_attention_kernel(kernel)
    try:
        torch._dynamo.reset()
        eager = fn(qkv, bias)
        compiled = torch.compile(fn, fullgraph=True)(qkv, bias)
        torch.testing.assert_close(compiled, eager, atol=1e-2, rtol=1e-2)
        compiled.float().sum().backward()
        assert torch.isfinite(qkv.grad).all() and torch.isfinite(bias.grad).all()
    finally:
        set_frame_attention_kernel(previous)


def test_the_kernel_benchmark_checks_and_times_every_row(tmp_path):
    """``benchmarks.frame_attention`` end to end, its kernel rows run by Triton's interpreter at a tiny size."""
    import json

    out = tmp_path / "frame_attention.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "benchmarks.frame_attention", "--device", "cpu", "--batch", "1", "--frames", "3",
               "--tokens", "3", "--heads", "1", "--head-dim", "16", "--repeats", "1", "--warmup", "0", "--copy-mib",
               "1", "--bias", "--out", str(out)]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {"pytorch regrouped", "pytorch strided", "per-frame", "tiled"} <= set(rows)
    for label, row in rows.items():
        assert row["max_rel_error_vs_fp64"] < 1e-4 and "wrong" not in row and "error" not in row, label
        assert row["forward_ms"] > 0 and row["forward_backward_ms"] > 0 and row["forward_backward_gb_per_s"] >= 0, label


HOPPER_TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@pytest.mark.skipif(not HOPPER_TOOLS.exists(), reason="needs the ptxas and cuobjdump that Triton's CUDA backend ships")
@pytest.mark.parametrize("kernel", frame_attention_triton.KERNELS)
@pytest.mark.parametrize("frames, head_dim, with_bias", [(8, 64, False), (8, 64, True), (5, 48, True)])
def test_the_kernels_compile_for_hopper_without_register_spills(kernel, frames, head_dim, with_bias):
    """Real GPU code generation, no GPU needed: each launch the ops make is compiled offline for sm_90 (H100/H200).

    The interpreter checks what the kernels compute; this checks that Triton's NVIDIA backend accepts them (tensor-
    core dots, reshapes), and that the default tiles neither spill registers nor leave too few warps per SM to hide
    memory latency (``benchmarks.kernel_resources`` prints the full table).
    """
    from benchmarks.kernel_resources import compile_launch, launches, resources
    from triton.backends.compiler import GPUTarget

    heads = 12
    for direction, launch in launches(kernel, frames, heads, head_dim, with_bias, 0, 0).items():
        usage = resources(compile_launch(launch, GPUTarget("cuda", 90, 32)), 90)
        assert usage["stack_bytes"] == 0 and usage["spill_instructions"] == 0, (direction, usage)
        assert usage["resident_warps_per_sm"] >= 12, (direction, usage)
