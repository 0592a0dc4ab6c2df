"""Regrouping frame-folded tokens into sequences over time and back."""

from __future__ import annotations

import torch
from einops import rearrange


def to_time_sequences(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*T, *tokens, D) -> (B*N, T, D): one sequence over time per clip and token position."""
    tokens = x.flatten(1, -2)  # (B*T, N, D), a view
    return rearrange(tokens, "(b t) n d -> (b n) t d", t=num_frames)


def from_time_sequences(xt: torch.Tensor, like: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Inverse of :func:`to_time_sequences`, shaped like ``like`` (B*T, *tokens, D)."""
    n = xt.shape[0] // (like.shape[0] // num_frames)
    x = rearrange(xt, "(b n) t d -> (b t) n d", n=n)
    return x.reshape(like.shape)
