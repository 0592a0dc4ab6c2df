"""A learned embedding over frames, interpolated when a clip has another length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalEmbedding(nn.Module):
    """A (1, T, D) parameter added to every token of frame t (class token included).

    Zero-initialised, so adding it changes nothing until it is trained. A model built for T
    frames accepts clips of another length T' by linearly interpolating the table to T', frame t
    standing for the cell [t, t+1) / T of the clip (``align_corners=False``, as timm resamples
    position embeddings): e.g. T=4 values [0, 1, 2, 3] give [0.5, 2.5] for T'=2.
    """

    def __init__(self, num_frames: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, num_frames, dim))

    @property
    def num_frames(self) -> int:
        return self.weight.shape[1]

    def table(self, num_frames: int) -> torch.Tensor:
        """The (1, num_frames, D) table, interpolated along time if needed."""
        if num_frames == self.num_frames:
            return self.weight
        # (1, T, D) -> (1, D, T) for 1-D interpolation over time, and back.
        resized = F.interpolate(self.weight.transpose(1, 2), size=num_frames, mode="linear", align_corners=False)
        return resized.transpose(1, 2)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Add the embedding to tokens ``x`` of shape (B*T, *tokens, D)."""
        table = self.table(num_frames).to(x.dtype)
        # (B*T, ..., D) -> (B, T, ..., D) so the table broadcasts over batch and token positions.
        frames = x.unflatten(0, (-1, num_frames))
        table = table.reshape(1, num_frames, *([1] * (x.dim() - 2)), table.shape[-1])
        return (frames + table).flatten(0, 1)
