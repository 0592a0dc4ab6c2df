"""Multi-head self-attention written once, over any frozen attention module's projections.

A backbone family describes one attention module as :class:`AttentionProjections`: how tokens
become packed q/k/v and how the attended values become the module's output. Both are per-token
maps, so they run in whatever layout the tokens are in. Only the softmax step mixes tokens:

- :func:`self_attention` attends along the sequences of (S, L, D) tokens (spatial attention, or
  any plain sequence);
- :func:`frame_self_attention` attends along the frames of frame-folded tokens (B*T, *tokens, D):
  each token position of a clip attends to itself in the clip's other frames (AIM's temporal
  attention). With the kernel, tokens are never regrouped into sequences over time: it reads q/k/v
  on a (B, T, N, 3, heads, d) view of the projection's output and writes its result frame-folded.

Attention over frames picks its implementation by device. On CUDA, with Triton, a short-sequence
kernel (forward and backward, a ``torch.library.triton_op`` that ``torch.compile`` traces into:
:mod:`adaptkit.layers.frame_attention_triton`) reads q/k/v in place. Elsewhere (CPU, attention
dropout) the tokens are regrouped into (B*N, T, D) sequences for ``scaled_dot_product_attention``,
which measured faster on CPU than attending on frame-folded views. :func:`set_frame_attention_kernel`
chooses the CUDA implementation (for benchmarks: the kernels' two designs, or the PyTorch path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange

from adaptkit.layers.frames import check_frame_folded, check_packed_qkv, frame_bias

try:  # Triton is optional: without it (or off CUDA) attention over frames takes the PyTorch path.
    from adaptkit.layers import frame_attention_triton as _kernel
except ImportError:  # pragma: no cover - depends on the installation
    _kernel = None

__all__ = [
    "FRAME_ATTENTION_KERNELS",
    "AttentionProjections",
    "attend_frames",
    "frame_attention_reference",
    "frame_self_attention",
    "self_attention",
    "set_frame_attention_kernel",
]

FRAME_ATTENTION_KERNELS = ("per-frame", "tiled", "pytorch")
_frame_kernel = "per-frame"  # read when a graph is traced: torch.compile guards on it


def set_frame_attention_kernel(kernel: str) -> str:
    """Choose how attention over frames runs on CUDA, for every model; returns the previous choice.

    Args:
        kernel: ``"per-frame"`` (the default: the Triton kernel that loops over key frames, measured on an H200),
            ``"tiled"`` (the Triton kernel on block-diagonal tensor-core tiles) or ``"pytorch"`` (regrouped
            sequences and ``scaled_dot_product_attention``, the path CPUs always take). Outputs agree within
            float rounding; only speed differs.

    Raises:
        ValueError: for any other name.
    """
    global _frame_kernel
    if kernel not in FRAME_ATTENTION_KERNELS:
        raise ValueError(f"unknown frame-attention kernel {kernel!r}; expected one of "
                         f"{', '.join(FRAME_ATTENTION_KERNELS)}")
    previous, _frame_kernel = _frame_kernel, kernel
    return previous


def _kernel_for(device: torch.device, dropout: float) -> str | None:
    """The Triton kernel attention over frames takes on ``device``, or None for the PyTorch path."""
    if _kernel is None or _frame_kernel == "pytorch" or device.type != "cuda" or dropout != 0.0:
        return None
    return _frame_kernel


class AttentionProjections(NamedTuple):
    """What :func:`self_attention` and :func:`frame_self_attention` need from one attention module.

    Built by a backbone family (``family.attention_projections(attn)``), which is the only code that
    knows the module's attribute names. The attention computed is
    ``out(softmax(scale * q @ k^T + bias) @ v, x)`` per head, with ``q, k, v = qkv(x).unbind(-3)``.

    Shapes: ``qkv`` maps tokens (*, D) to packed q/k/v (*, 3, heads, d), d = head_dim, per token;
    ``out`` maps attended values (*, heads * d) and the tokens (*, D) to (*, D). The same projections
    serve spatial attention and AIM's temporal attention (AIM Sec. 3.3: T-MSA and S-MSA are the same
    frozen layer applied to different input dimensions).
    """

    qkv: Callable[[torch.Tensor], torch.Tensor]
    """Tokens (*, D) -> packed q/k/v (*, 3, heads, head_dim), per token. Includes whatever the module
    does to q and k token by token (q/k norms, cosine normalisation and logit scale, rotary
    embeddings for spatial attention), so that what remains is plain scaled dot-product attention."""
    out: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(attended values (*, heads * head_dim), the tokens x (*, D)) -> the module's output (*, D):
    scale norm, gate, output projection and its dropout, as the module applies them."""
    scale: float
    """Softmax scale applied to q @ k^T (1/sqrt(head_dim), or 1 for cosine attention)."""
    dropout: float = 0.0
    """Attention-weight dropout probability (0 in eval mode)."""
    bias: torch.Tensor | None = None
    """Additive attention bias broadcastable to (S, heads, L, L) for :func:`self_attention`
    (a spatial relative position bias); None along time."""
    out_reads_tokens: bool = True
    """Whether ``out`` reads the tokens ``x`` (a gate computed from them). When False, callers may
    pass None, so a recomputed attention does not keep the tokens alive for its backward pass."""


def self_attention(projections: AttentionProjections, x: torch.Tensor) -> torch.Tensor:
    """Self-attention along the sequences of ``x``: (S, L, D) -> (S, L, D)."""
    qkv = projections.qkv(x)  # (S, L, 3, heads, head_dim)
    q, k, v = qkv.unbind(-3)
    out = attend_sequences(q, k, v, scale=projections.scale, bias=projections.bias, dropout_p=projections.dropout)
    return projections.out(out, x)


def frame_self_attention(
    projections: AttentionProjections, x: torch.Tensor, num_frames: int, bias: torch.Tensor | None = None, *,
    tail: Callable[[torch.Tensor], torch.Tensor] | None = None, recompute: bool = False,
) -> torch.Tensor:
    """Self-attention over the frames of each clip, token position by token position.

    Args:
        projections: The attention module's projections (no spatial position machinery).
        x: Frame-folded tokens (B*T, *tokens, D).
        num_frames: T.
        bias: Optional additive bias (heads, T, T) over (query frame, key frame), e.g. a
            :class:`~adaptkit.layers.RelativeTemporalBias`'s output, or one that broadcasts to it.
        tail: Optional per-token map applied to the result (a layer scale and an adapter), so that
            ``recompute`` covers it too.
        recompute: Keep only q/k/v (which the attention's backward needs anyway) for the backward
            pass and recompute the attention, the output projection and ``tail`` from them there
            (``torch.utils.checkpoint``; same operations, so outputs and gradients are unchanged).

    Returns:
        (B*T, *tokens, D), frame-folded like ``x``.
    """
    kernel = _kernel_for(x.device, projections.dropout) is not None
    tokens = x.flatten(1, -2)  # (B*T, N, D), a view
    positions = tokens.shape[1]
    if not kernel:
        # Without the kernel, regrouping into sequences over time is faster (measured on CPU): the fused
        # scaled_dot_product_attention kernels take 4-D (S, heads, L, d) inputs, and frame-folded q/k/v
        # only form a 5-D (B, N, heads, T, d) view, which falls back to the unfused path.
        # (B*T, N, D) -> (B*N, T, D), dense rows: the projections run as plain GEMMs.
        tokens = rearrange(tokens, "(b t) n d -> (b n) t d", t=num_frames).contiguous()
    qkv = projections.qkv(tokens)  # kernel: (B*T, N, 3, heads, d), per token; else (B*N, T, 3, heads, d)
    bias = frame_bias(bias, qkv.shape[-2], num_frames, qkv.device)  # both paths refuse or broadcast alike
    gate_input = tokens if projections.out_reads_tokens else None
    out_shape = x.shape  # the closure must not hold x: under recompute it lives until the backward pass

    def attend_and_project(qkv: torch.Tensor, bias: torch.Tensor | None, gate_input: torch.Tensor | None) -> torch.Tensor:
        if kernel:
            y = projections.out(attend_frames(qkv, num_frames, scale=projections.scale, bias=bias), gate_input)
        else:
            q, k, v = qkv.unbind(-3)  # bias (heads, T, T) broadcasts over B*N
            out = attend_sequences(q, k, v, scale=projections.scale, bias=bias, dropout_p=projections.dropout)
            y = rearrange(projections.out(out, gate_input), "(b n) t d -> (b t) n d", n=positions)
        y = y.reshape(out_shape)
        return y if tail is None else tail(y)

    if recompute and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(attend_and_project, qkv, bias, gate_input, use_reentrant=False)
    return attend_and_project(qkv, bias, gate_input)


def attend_sequences(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v along dim -3: q, k, v (*, L, heads, d) -> (*, L, heads * d)."""
    # (*, L, heads, d) -> (*, heads, L, d): the layout scaled_dot_product_attention expects.
    q, k, v = (t.transpose(-3, -2) for t in (q, k, v))
    mask = None if bias is None else bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.transpose(-3, -2).flatten(-2)  # (*, L, heads * d)


def attend_frames(
    qkv: torch.Tensor, num_frames: int, *, scale: float, bias: torch.Tensor | None = None, dropout_p: float = 0.0
) -> torch.Tensor:
    """Attention over frames on packed, frame-folded q/k/v.

    Args:
        qkv: (B*T, *tokens, 3, heads, d), e.g. the fused qkv projection's output viewed per head.
        num_frames: T.
        scale: Softmax scale.
        bias: Optional additive bias (heads, T, T) (query frame, key frame), or one that broadcasts to it; gets a
            gradient.
        dropout_p: Attention-weight dropout (forces the PyTorch path).

    Returns:
        (B*T, *tokens, heads * d): token n of frame t attended over token n of every frame of its clip.

    Raises:
        ValueError: if ``num_frames`` < 1 or the leading dimension is not a multiple of it, if ``qkv`` is not
            (B*T, *tokens, 3, heads, d) in a float type, or if the bias does not broadcast to (heads, T, T). Both
            paths (kernel and PyTorch) accept and refuse the same inputs.
    """
    if qkv.dim() < 4 or qkv.shape[-3] != 3:
        raise ValueError(f"packed q/k/v must be (B*T, *tokens, 3, heads, d), got shape {tuple(qkv.shape)}")
    check_frame_folded(qkv.shape[0], num_frames)
    *lead, three, heads, dim = qkv.shape
    tokens = math.prod(lead[1:])
    # (B*T, *tokens, 3, heads, d) -> (B, T, N, 3, heads, d): a view of the projection's output.
    packed = qkv.reshape(-1, num_frames, tokens, three, heads, dim)
    name = _kernel_for(packed.device, dropout_p)
    if name is not None and _kernel.supports(packed):
        out = _kernel.frame_attention(packed, bias, scale, name)  # (B, T, N, heads, d), frame-folded
    else:
        out = frame_attention_reference(packed, bias, scale, dropout_p)
    return out.reshape(*lead, heads * dim)


def frame_attention_reference(
    packed: torch.Tensor, bias: torch.Tensor | None, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    """The PyTorch path: packed q/k/v (B, T, N, 3, heads, d) -> (B, T, N, heads, d).

    ``scaled_dot_product_attention`` reads q/k/v through strided (B, N, heads, T, d) views; only
    the output is copied back to the frame-folded layout. ``bias`` is (heads, T, T) or broadcasts to it.

    Raises:
        ValueError: as :func:`adaptkit.layers.frame_attention_triton.frame_attention` does, for ``packed`` that is
            not (B, T, N, 3, heads, d) in a float type or a bias that does not broadcast to (heads, T, T).
    """
    check_packed_qkv(packed)
    bias = frame_bias(bias, packed.shape[4], packed.shape[1], packed.device)
    q, k, v = packed.permute(3, 0, 2, 4, 1, 5).unbind(0)  # 3 x (B, N, heads, T, d), views
    mask = None if bias is None else bias.to(q.dtype)  # (heads, T, T), broadcast over B and N
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.permute(0, 3, 1, 2, 4)  # (B, T, N, heads, d)
