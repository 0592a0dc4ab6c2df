"""Pure building blocks that know nothing about any backbone family.

The Triton kernels for attention over frames are the public submodules
:mod:`adaptkit.layers.frame_attention_triton` (the ``torch.library`` op and its launch geometry) and
:mod:`adaptkit.layers.frame_attention_kernels` (the ``@triton.jit`` kernels); both need Triton.
"""

from adaptkit.layers.adapter import Adapter
from adaptkit.layers.attention import (
    FRAME_ATTENTION_KERNELS,
    AttentionProjections,
    attend_frames,
    frame_attention_reference,
    frame_self_attention,
    self_attention,
    set_frame_attention_kernel,
)
from adaptkit.layers.head_shift import shift_heads
from adaptkit.layers.linear_adapter import LinearAdapter, fold_after, fold_before
from adaptkit.layers.st_adapter import STAdapter
from adaptkit.layers.temporal_bias import RelativeTemporalBias
from adaptkit.layers.temporal_embedding import TemporalEmbedding

__all__ = [
    "FRAME_ATTENTION_KERNELS",
    "Adapter",
    "AttentionProjections",
    "LinearAdapter",
    "RelativeTemporalBias",
    "STAdapter",
    "TemporalEmbedding",
    "attend_frames",
    "fold_after",
    "fold_before",
    "frame_attention_reference",
    "frame_self_attention",
    "self_attention",
    "set_frame_attention_kernel",
    "shift_heads",
]
