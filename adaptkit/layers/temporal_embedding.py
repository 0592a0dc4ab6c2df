"""A learned embedding over frames, interpolated when a clip has another length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptkit.layers.frames import check_frame_folded, check_positive


class TemporalEmbedding(nn.Module):
    """A (1, T, D) parameter added to every token of frame t (class token included).

    Zero-initialised, so adding it changes nothing until it is trained. A model built for T
    frames accepts clips of another length T' by linearly interpolating the table to T', frame t
    standing for the cell [t, t+1) / T of the clip (``align_corners=False``, as timm resamples
    position embeddings): e.g. T=4 values [0, 1, 2, 3] give [0.5, 2.5] for T'=2.

    Source: the AIM paper does not mention it; the authors' code adds it, zero-initialised, after
    the spatial position embedding and before the pre-norm. Without it the network would not see
    the order of frames (temporal attention is permutation-equivariant and pooling is a mean).

    Args:
        num_frames: Clip length T the table is built for.
        dim: Token width D.

    Raises:
        ValueError: if ``num_frames`` is not > 0.
    """

    def __init__(self, num_frames: int, dim: int) -> None:
        super().__init__()
        check_positive("TemporalEmbedding num_frames", num_frames)
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
        """Add the embedding to frame-folded tokens ``x`` (B*T, *tokens, D); returns (B*T, *tokens, D) in x's dtype.

        Raises:
            ValueError: if B*T is not a multiple of ``num_frames``.
        """
        check_frame_folded(x.shape[0], num_frames)
        table = self.table(num_frames).to(x.dtype)
        # (B*T, ..., D) -> (B, T, ..., D) so the table broadcasts over batch and token positions.
        frames = x.unflatten(0, (-1, num_frames))
        table = table.reshape(1, num_frames, *([1] * (x.dim() - 2)), table.shape[-1])
        return (frames + table).flatten(0, 1)
