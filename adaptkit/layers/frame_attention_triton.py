"""Attention over a clip's frames as Triton kernels (forward and backward), registered with ``torch.library``.

AIM's temporal attention runs B*N*heads independent softmax attentions of length T (8 to 32
frames): tiny arithmetic, bound by memory traffic. On an H200, kernels built for long sequences,
plus the copies that regroup tokens into sequences, cost far more than the maths.

These kernels read q/k/v where the fused projection wrote them, through the strides of a
(B, T, N, 3, heads, d) view, and write the output frame-folded (B, T, N, heads, d), i.e.
(B*T, N, heads*d) as the output projection wants it. One program handles a block of token positions
of one clip and one head, all frames, in one of two designs (:data:`KERNELS`, in
:mod:`adaptkit.layers.frame_attention_kernels`):

- ``per-frame``: the (positions, T, d) query tile stays in registers while a loop runs over key
  frames with an online softmax, on CUDA cores;
- ``tiled``: positions x frames rows form one block-diagonal score tile, computed with ``tl.dot`` on
  tensor cores; q, k and v are each read once as a whole tile.

The backward recomputes the attention weights from the saved log-sum-exp; it does not need the
forward's output (the softmax-gradient term ``sum_j p_ij dp_ij`` is recomputed), so autograd keeps
only q/k/v and the log-sum-exp. It writes the gradients of q, k and v into one packed
(B, T, N, 3, heads, d) tensor, the gradient of the fused projection's output: no concatenation.

Both ops are ``torch.library.triton_op``s, so ``torch.compile`` traces into them without a graph
break. :func:`forward_launch` and :func:`backward_launch` give the exact launches the ops make (they
work on meta tensors: ``benchmarks/kernel_resources.py`` compiles them offline for a GPU target). The
kernels are looked up at call time: with ``TRITON_INTERPRET=1`` set when
:mod:`~adaptkit.layers.frame_attention_kernels` is imported (or reloaded) they run on CPU tensors
through Triton's interpreter, which is how the tests check them without a GPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from torch.library import triton_op, wrap_triton
from torch.utils.flop_counter import register_flop_formula
from triton.runtime.jit import JITFunction

from adaptkit.layers import frame_attention_kernels as kernels
from adaptkit.layers.frames import check_packed_qkv, frame_bias

__all__ = ["KERNELS", "MAX_FRAMES", "MAX_HEAD_DIM", "Launch", "backward_launch", "forward_launch", "frame_attention",
           "supports"]

MAX_FRAMES = 64
"""Longer clips use ``scaled_dot_product_attention`` (a whole query tile would not fit in registers)."""
MAX_HEAD_DIM = 256
KERNELS = ("per-frame", "tiled")
"""The two designs (:mod:`adaptkit.layers.frame_attention_kernels`): a loop over key frames on CUDA cores, or
block-diagonal score tiles on tensor cores."""
_TILE = 2048  # per-frame: elements of one (BLOCK_N, BLOCK_T, BLOCK_D) register tile
_TILE_ROWS = 32  # tiled: rows (token positions x frames) of one block-diagonal tile
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def supports(packed: torch.Tensor) -> bool:
    """Whether the kernels handle packed q/k/v (B, T, N, 3, heads, d) on its device and dtype."""
    frames, head_dim = packed.shape[1], packed.shape[-1]
    return packed.is_cuda and packed.dtype in _DTYPES and frames <= MAX_FRAMES and head_dim <= MAX_HEAD_DIM


def frame_attention(
    packed: torch.Tensor, bias: torch.Tensor | None, scale: float, kernel: str = "per-frame", *,
    block_rows: int = 0, num_warps: int = 0,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v over frames: packed (B, T, N, 3, heads, d) -> (B, T, N, heads, d).

    Args:
        packed: q/k/v of every frame, e.g. a fused projection's output viewed (B, T, N, 3, heads, d).
        bias: Optional (heads, T, T) additive bias, indexed (query frame, key frame), or one that broadcasts to it
            (e.g. (T, T)); gets a gradient.
        scale: Softmax scale.
        kernel: One of :data:`KERNELS`.
        block_rows: Tuning: token positions x frames per program (a power of two; 0 chooses).
        num_warps: Tuning: warps per program (0 chooses).

    Raises:
        ValueError: for an unknown ``kernel``, a ``block_rows`` that is not a power of two, ``packed`` that is not
            (B, T, N, 3, heads, d) in float16, bfloat16 or float32, or a bias that does not broadcast to (heads, T, T)
            (as :func:`~adaptkit.layers.frame_attention_reference`).
    """
    check_packed_qkv(packed, _DTYPES)
    # (heads, T, T); stride 0 where it broadcasts, which the kernels read as is
    bias = frame_bias(bias, packed.shape[4], packed.shape[1], packed.device)
    if kernel not in KERNELS:
        raise ValueError(f"unknown frame-attention kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if block_rows & (block_rows - 1):
        raise ValueError(f"block_rows must be a power of two (or 0 to choose), got {block_rows}")
    out, _ = torch.ops.adaptkit.frame_attention(packed, bias, scale, kernel, block_rows, num_warps)
    return out


class _Tiles(NamedTuple):
    kernels: tuple[str, str]  # forward and backward kernel names in frame_attention_kernels
    block_n: int
    block_t: int
    block_d: int
    num_warps: int
    extra: dict


def _tiles(kernel: str, packed: torch.Tensor, block_rows: int, num_warps: int) -> _Tiles:
    frames, head_dim = packed.shape[1], packed.shape[-1]
    block_t = triton.next_power_of_2(frames)
    if kernel == "per-frame":
        block_d = triton.next_power_of_2(head_dim)
        block_n = max(1, block_rows // block_t) if block_rows else max(1, min(64, _TILE // (block_t * block_d)))
        return _Tiles(("per_frame_forward_kernel", "per_frame_backward_kernel"), block_n, block_t, block_d,
                      num_warps or 4, {})
    block_d = max(16, triton.next_power_of_2(head_dim))  # tl.dot needs every dimension >= 16
    rows = max(16, block_t, block_rows or _TILE_ROWS)
    # Compiled offline for sm_90 (benchmarks/kernel_resources.py): at 4 warps, tiles up to 32 rows x 64 channels need
    # at most 114 registers and never spill, bias included; a 64 x 64 backward with a bias spills, so larger get 8.
    warps = num_warps or (4 if rows * block_d < 4096 else 8)
    # float32 inputs keep float32 products (as PyTorch's path does by default); half types use tensor cores natively.
    precision = "ieee" if packed.dtype == torch.float32 else "tf32"
    return _Tiles(("tiled_forward_kernel", "tiled_backward_kernel"), rows // block_t, block_t, block_d, warps,
                  {"PRECISION": precision})


class Launch(NamedTuple):
    """One kernel launch as the ops make it: ``getattr(frame_attention_kernels, kernel)[grid](*args, **options)``."""

    kernel: str
    grid: tuple[int, int]
    args: tuple
    options: dict  # constexprs and num_warps


def _bias_strides(bias: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if bias is None else bias.stride()


def forward_launch(
    packed: torch.Tensor, bias: torch.Tensor | None, scale: float, kernel: str, block_rows: int = 0,
    num_warps: int = 0,
) -> tuple[Launch, torch.Tensor, torch.Tensor]:
    """The forward op's launch and its outputs (allocated, not yet written): output (B, T, N, heads, d) and
    log-sum-exp (B, T, N, heads) float32. Works on meta tensors, to inspect or compile a launch offline."""
    batch, frames, tokens, _, heads, head_dim = packed.shape
    out = packed.new_empty(batch, frames, tokens, heads, head_dim)
    lse = torch.empty(batch, frames, tokens, heads, device=packed.device, dtype=torch.float32)
    tiles = _tiles(kernel, packed, block_rows, num_warps)
    args = (
        packed, packed if bias is None else bias, out, lse,
        *packed.stride(), *_bias_strides(bias), *out.stride()[:4], *lse.stride()[:3],
        tokens, frames, head_dim, scale,
    )
    options = dict(HAS_BIAS=bias is not None, BLOCK_N=tiles.block_n, BLOCK_T=tiles.block_t, BLOCK_D=tiles.block_d,
                   num_warps=tiles.num_warps, **tiles.extra)
    return Launch(tiles.kernels[0], (batch * triton.cdiv(tokens, tiles.block_n), heads), args, options), out, lse


def backward_launch(
    grad_out: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, lse: torch.Tensor, scale: float,
    kernel: str, block_rows: int = 0, num_warps: int = 0,
) -> tuple[Launch, torch.Tensor, torch.Tensor]:
    """The backward op's launch and its outputs: the packed q/k/v gradient and the per-program partial bias
    gradient (programs, heads, T, T), empty without a bias."""
    batch, frames, tokens, _, heads, head_dim = packed.shape
    tiles = _tiles(kernel, packed, block_rows, num_warps)
    programs = batch * triton.cdiv(tokens, tiles.block_n)
    grad_packed = torch.empty(packed.shape, device=packed.device, dtype=packed.dtype)
    # Each program writes its own slice of the bias gradient; summed by the op (deterministic, no atomics).
    partial_shape = (programs, heads, frames, frames) if bias is not None else (0, 0, 0, 0)
    partial = torch.empty(partial_shape, device=packed.device, dtype=torch.float32)
    args = (
        # Without a bias, real tensors stand in for the unused bias pointers (Triton refuses null ones).
        packed, packed if bias is None else bias, grad_out, lse, grad_packed, grad_packed if bias is None else partial,
        *packed.stride(), *_bias_strides(bias), *grad_out.stride(), *lse.stride()[:3],
        *grad_packed.stride()[:5], *partial.stride()[:3],
        tokens, frames, head_dim, scale,
    )
    options = dict(HAS_BIAS=bias is not None, BLOCK_N=tiles.block_n, BLOCK_T=tiles.block_t, BLOCK_D=tiles.block_d,
                   num_warps=tiles.num_warps, **tiles.extra)
    return Launch(tiles.kernels[1], (programs, heads), args, options), grad_packed, partial


def _run(launch: Launch) -> None:
    # The kernel is looked up at call time, so a reload under TRITON_INTERPRET=1 takes effect. wrap_triton lets
    # torch.compile trace the launch; kernels run by Triton's interpreter are launched as they are (torch before
    # 2.12 refuses to wrap them).
    kernel = getattr(kernels, launch.kernel)
    kernel = wrap_triton(kernel) if isinstance(kernel, JITFunction) else kernel
    kernel[launch.grid](*launch.args, **launch.options)


@triton_op("adaptkit::frame_attention", mutates_args=())
def _frame_attention(
    packed: torch.Tensor, bias: torch.Tensor | None, scale: float, kernel: str, block_rows: int, num_warps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """packed q/k/v (B, T, N, 3, heads, d) -> (output (B, T, N, heads, d), log-sum-exp (B, T, N, heads) float32)."""
    launch, out, lse = forward_launch(packed, bias, scale, kernel, block_rows, num_warps)
    _run(launch)
    return out, lse


@triton_op("adaptkit::frame_attention_backward", mutates_args=())
def _frame_attention_backward(
    grad_out: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, lse: torch.Tensor, scale: float,
    kernel: str, block_rows: int, num_warps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of packed q/k/v (B, T, N, 3, heads, d) and of the bias (heads, T, T); empty without a bias."""
    launch, grad_packed, partial = backward_launch(grad_out, packed, bias, lse, scale, kernel, block_rows, num_warps)
    _run(launch)
    grad_bias = partial.sum(0).to(bias.dtype) if bias is not None else partial.new_empty(0)
    return grad_packed, grad_bias


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 - torch.library's signature
    packed, bias, *ctx.options = inputs  # scale, kernel, block_rows, num_warps
    _, lse = output
    ctx.save_for_backward(packed, bias, lse)  # not the output: the backward recomputes what it needs


def _backward(ctx, grad_out: torch.Tensor, grad_lse: torch.Tensor | None):  # noqa: ANN001, ANN202
    packed, bias, lse = ctx.saved_tensors
    grad_packed, grad_bias = torch.ops.adaptkit.frame_attention_backward(grad_out, packed, bias, lse, *ctx.options)
    return grad_packed, (grad_bias if bias is not None else None), None, None, None, None


torch.library.register_autograd("adaptkit::frame_attention", _backward, setup_context=_setup_context)


# FlopCounterMode cannot look into a kernel: count what plain attention does, as torch counts
# scaled_dot_product_attention (q k^T and p v forward; twice that backward, recomputation excluded).
def _attention_flops(packed_shape: tuple[int, ...]) -> int:
    batch, frames, tokens, _, heads, head_dim = packed_shape
    return 4 * batch * tokens * heads * frames * frames * head_dim


@register_flop_formula(torch.ops.adaptkit.frame_attention)
def _forward_flops(packed_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    return _attention_flops(packed_shape)


@register_flop_formula(torch.ops.adaptkit.frame_attention_backward)
def _backward_flops(grad_out_shape, packed_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    return 2 * _attention_flops(packed_shape)
