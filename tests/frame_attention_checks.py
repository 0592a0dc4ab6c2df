"""Checks of the Triton kernels for attention over frames against the PyTorch path.

Used two ways by ``tests/test_frame_attention_kernel.py``:
- on CUDA, imported and called with ``device="cuda"`` (compiled kernels, float32 and bfloat16);
- without a GPU, run as a script in a fresh interpreter with ``TRITON_INTERPRET=1`` (Triton reads it
  when it is imported, so it cannot be switched on inside the test process): the same kernels then
  run on CPU tensors through Triton's interpreter. The script first checks that they really are
  interpreted kernels, then prints ``interpreted kernels: all checks passed``.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptkit.layers import frame_attention_triton
from adaptkit.layers.attention import frame_attention_reference

TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=3e-3, rtol=3e-3),
             torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
"""Kernel vs the float64 PyTorch path on the same (rounded) inputs. The kernels accumulate in float32; in
half types they round the output and the q/k/v gradients to the type (bfloat16: 8 mantissa bits, ~4e-3
relative; float16: 11 bits, ~5e-4), and the tiled kernel also rounds the attention weights and the logits'
gradient to it before its tensor-core products, as flash attention does.

Under Triton's interpreter the half-type checks use float16: Triton 3.8's interpreter multiplies the bit patterns
of bfloat16 ``tl.dot`` operands (triton-lang/triton#11584; "we just don't support it yet"), so bfloat16 is
checked on CUDA."""


def make_inputs(batch, frames, tokens, heads, head_dim, with_bias, strided, dtype, device, seed=0):
    """Packed q/k/v (B, T, N, 3, heads, d) and a (heads, T, T) bias (or None), leaves needing gradients."""
    generator = torch.Generator(device).manual_seed(seed)
    if strided:  # q/k/v inside a wider fused projection output, every other channel: nothing contiguous
        wide = torch.randn(batch, frames, tokens, 3, heads, 2 * head_dim, generator=generator, device=device)
        packed = wide[..., ::2].to(dtype)
    else:
        packed = torch.randn(batch, frames, tokens, 3, heads, head_dim, generator=generator, device=device).to(dtype)
    packed = packed.detach().requires_grad_(True)
    bias = None
    if with_bias:  # a relative temporal bias gathered from its table is a non-contiguous (heads, T, T) view
        bias = torch.randn(frames, frames, heads, generator=generator, device=device).permute(2, 0, 1)
        bias = bias.detach().requires_grad_(True)
    return packed, bias


def _outputs_and_gradients(fn, packed, bias, weights):
    out = fn(packed, bias)
    inputs = [packed] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad((out.to(weights.dtype) * weights).sum(), inputs)
    return out, grads


def check_against_reference(batch, frames, tokens, heads, head_dim, with_bias, strided, dtype, device,
                            kernel="per-frame", block_rows=0) -> None:
    """Output and gradients of q/k/v and of the bias, kernel vs the float64 PyTorch path."""
    packed, bias = make_inputs(batch, frames, tokens, heads, head_dim, with_bias, strided, dtype, device)
    scale = head_dim**-0.5
    weights = torch.randn(batch, frames, tokens, heads, head_dim, device=device)

    def run_kernel(p, b):
        return frame_attention_triton.frame_attention(p, b, scale, kernel, block_rows=block_rows)

    out, grads = _outputs_and_gradients(run_kernel, packed, bias, weights)
    packed64 = packed.detach().double().requires_grad_(True)
    bias64 = None if bias is None else bias.detach().double().requires_grad_(True)
    expected, expected_grads = _outputs_and_gradients(lambda p, b: frame_attention_reference(p, b, scale),
                                                      packed64, bias64, weights.double())
    assert out.shape == (batch, frames, tokens, heads, head_dim) and out.is_contiguous()  # frame-folded
    torch.testing.assert_close(out.double(), expected, **TOLERANCE[dtype])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        # The bias gradient sums over clips and token positions: compare it relative to its size.
        size = expected_grad.abs().max().clamp(min=1.0)
        torch.testing.assert_close(grad.double() / size, expected_grad / size, **TOLERANCE[dtype])


def check_saved_for_backward(device, kernel="per-frame") -> None:
    """Autograd keeps q/k/v, the bias and the log-sum-exp; not the output (the backward recomputes)."""
    packed, bias = make_inputs(2, 4, 3, 2, 8, True, False, torch.float32, device)
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        frame_attention_triton.frame_attention(packed, bias, 0.3, kernel)
    assert sorted(tuple(t.shape) for t in saved) == sorted([tuple(packed.shape), tuple(bias.shape), (2, 4, 3, 2)])


def _matches_the_reference(kernel, packed, bias, weights,
                           tolerance=TOLERANCE[torch.float32]) -> tuple[torch.Tensor, ...]:
    """The kernel's output and gradients of packed q/k/v and ``bias`` against the float64 reference; returns the
    kernel's gradients."""
    out, grads = _outputs_and_gradients(lambda p, b: frame_attention_triton.frame_attention(p, b, 0.3, kernel),
                                        packed, bias, weights)
    packed64, bias64 = (t.detach().double().requires_grad_(True) for t in (packed, bias))
    expected, expected_grads = _outputs_and_gradients(lambda p, b: frame_attention_reference(p, b, 0.3),
                                                      packed64, bias64, weights.double())
    torch.testing.assert_close(out.double(), expected, **tolerance)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad.double(), expected_grad, **tolerance)
    return grads


def check_a_bias_that_broadcasts(kernel, bias_shape) -> None:
    """A bias that broadcasts to (heads, T, T), e.g. (1, T, T) or (T, T), is used as the PyTorch path uses it, and its
    gradient has its own shape (the ops expand it to stride-0 views, which the kernels read as they are)."""
    packed, _ = make_inputs(1, 4, 3, 2, 8, False, False, torch.float32, "cpu")
    bias = torch.randn(bias_shape, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    grads = _matches_the_reference(kernel, packed, bias, torch.randn(1, 4, 3, 2, 8))
    assert grads[1].shape == bias.shape


def check_a_bias_masking_a_rows_first_keys(kernel) -> None:
    """-inf before a row's first allowed key (row i attends to keys j >= i): no NaN from the online softmax."""
    frames = 4
    mask = torch.zeros(frames, frames).masked_fill(torch.ones(frames, frames).tril(-1).bool(), float("-inf"))
    packed, _ = make_inputs(1, frames, 3, 2, 8, False, True, torch.float32, "cpu")
    weights = torch.randn(1, frames, 3, 2, 8)
    out, (grad,) = _outputs_and_gradients(
        lambda p, b: frame_attention_triton.frame_attention(p, mask.expand(2, frames, frames).contiguous(), 0.3,
                                                            kernel), packed, None, weights)
    packed64 = packed.detach().double().requires_grad_(True)
    expected, (expected_grad,) = _outputs_and_gradients(lambda p, b: frame_attention_reference(p, mask.double(), 0.3),
                                                        packed64, None, weights.double())
    torch.testing.assert_close(out.double(), expected, **TOLERANCE[torch.float32])
    torch.testing.assert_close(grad.double(), expected_grad, **TOLERANCE[torch.float32])


def check_a_large_bias_with_a_partial_block(kernel) -> None:
    """Bias 100 and 3 token positions in a block of more: padded rows must not overflow exp into NaN gradients."""
    packed, _ = make_inputs(1, 4, 3, 2, 8, False, False, torch.float32, "cpu")
    bias = torch.full((2, 4, 4), 100.0).add_(torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(2)))
    weights = torch.randn(1, 4, 3, 2, 8, generator=torch.Generator().manual_seed(3))
    # Logits near 100 keep float32's ~1e-7 relative precision of 100, about 1e-5 absolute: 4e-5 seen in gradients.
    _matches_the_reference(kernel, packed, bias.requires_grad_(True), weights, tolerance=dict(rtol=1e-4, atol=1e-4))


@settings(max_examples=16, deadline=None)
@given(
    batch=st.integers(1, 2), frames=st.integers(1, 6), tokens=st.integers(1, 5), heads=st.integers(1, 2),
    head_dim=st.sampled_from([4, 8, 12]), with_bias=st.booleans(), strided=st.booleans(),
    kernel=st.sampled_from(frame_attention_triton.KERNELS),
    block_rows=st.sampled_from([0, 16]),  # 16: two or more blocks of token positions per clip, the last partial
    dtype=st.sampled_from([torch.float32, torch.float16]),
)
def check_random_small_shapes_on_cpu(batch, frames, tokens, heads, head_dim, with_bias, strided, kernel,
                                     block_rows, dtype) -> None:
    check_against_reference(batch, frames, tokens, heads, head_dim, with_bias, strided, dtype, "cpu",
                            kernel, block_rows)


def main() -> None:
    from triton.runtime.interpreter import InterpretedFunction

    from adaptkit.layers import frame_attention_kernels

    for name in ("per_frame_forward_kernel", "per_frame_backward_kernel", "tiled_forward_kernel",
                 "tiled_backward_kernel"):
        assert isinstance(getattr(frame_attention_kernels, name), InterpretedFunction), f"{name} is not interpreted"
    check_random_small_shapes_on_cpu()
    for kernel in frame_attention_triton.KERNELS:
        check_saved_for_backward("cpu", kernel)
        # Every kernel on each edge: one frame, a partial last block, a bias, strided inputs, several blocks.
        check_against_reference(1, 1, 3, 1, 8, True, True, torch.float32, "cpu", kernel, 16)
        check_against_reference(2, 6, 5, 2, 12, True, True, torch.float32, "cpu", kernel, 16)
        check_against_reference(2, 8, 9, 2, 64, True, True, torch.float16, "cpu", kernel)  # AIM's T and d
        for bias_shape in [(1, 4, 4), (4, 4), (4,), (2, 1, 4)]:
            check_a_bias_that_broadcasts(kernel, bias_shape)
        check_a_bias_masking_a_rows_first_keys(kernel)
        check_a_large_bias_with_a_partial_block(kernel)
    print("interpreted kernels: all checks passed")


if __name__ == "__main__":
    main()
