"""Pure building blocks that know nothing about any backbone family."""

from adaptkit.layers.adapter import Adapter
from adaptkit.layers.attention import (
    FRAME_ATTENTION_KERNELS,
    AttentionProjections,
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
    "fold_after",
    "fold_before",
    "frame_self_attention",
    "self_attention",
    "set_frame_attention_kernel",
    "shift_heads",
]
