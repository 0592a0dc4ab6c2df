"""The Triton kernels for attention over frames, against the PyTorch path (checks in ``frame_attention_checks``).

Without a GPU the kernels run through Triton's interpreter in a subprocess; with CUDA (tests
marked ``cuda``) they run compiled, in float32 and bfloat16, eager and under ``torch.compile``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="needs Triton")

import frame_attention_checks as checks  # noqa: E402
from adaptkit.layers import frame_attention_triton  # noqa: E402
from adaptkit.layers.attention import attend_frames  # noqa: E402

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


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("frames, head_dim", [(8, 64), (16, 32), (32, 128), (5, 48)])
def test_cuda_kernels_match_the_pytorch_path(dtype, frames, head_dim):
    checks.check_against_reference(2, frames, 197, 3, head_dim, True, False, dtype, "cuda")


@CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("with_bias, strided", [(False, True), (True, True)])
def test_cuda_kernels_read_strided_inputs(with_bias, strided):
    checks.check_against_reference(3, 8, 50, 2, 64, with_bias, strided, torch.float32, "cuda")


@CUDA
@pytest.mark.cuda
def test_cuda_kernels_keep_only_what_backward_needs():
    checks.check_saved_for_backward("cuda")


@CUDA
@pytest.mark.cuda
def test_cuda_attend_frames_compiles_as_one_graph_through_the_kernels():
    qkv = torch.randn(2 * 8, 197, 3, 12, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    bias = torch.randn(12, 8, 8, device="cuda", requires_grad=True)

    def fn(qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return attend_frames(qkv, 8, scale=0.125, bias=bias)

    eager = fn(qkv, bias)
    compiled = torch.compile(fn, fullgraph=True)(qkv, bias)
    torch.testing.assert_close(compiled, eager, atol=1e-2, rtol=1e-2)
    compiled.float().sum().backward()
    assert torch.isfinite(qkv.grad).all() and torch.isfinite(bias.grad).all()
