"""A learned relative position bias for attention over frames, resampled when a clip has another length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaptkit.layers.frames import check_positive


class RelativeTemporalBias(nn.Module):
    """A (2T-1, heads) table: the logit of query frame i attending to key frame j gets ``table[i - j + T - 1]``.

    Zero-initialised: before training no frame offset is preferred, and a fresh model does not
    depend on the random seed. (Identity at initialisation does not need it: the temporal
    adapter after the attention starts at zero whatever the bias.)

    Source: Swin's relative position bias (Liu et al., ICCV 2021, its "Relative position bias"
    paragraph: ``SoftMax(QK^T / sqrt(d) + B) V`` with B read from a learned table indexed by the
    relative offset) taken along time alone, as the AIM authors' Swin variant does for its temporal
    attention (AIM Table 6, Swin-B; the table's shape (2T-1, heads) is from their code, which
    leaves it untrained: here it trains).

    A model built for T frames accepts clips of another length T': the table is linearly
    resampled from 2T-1 to 2T'-1 offsets with the zero offset and both extreme offsets kept in
    place (``align_corners=True``): the entries are offsets, and "same frame" must stay exactly
    in the middle. (The ViT families' :class:`TemporalEmbedding` holds frame positions instead and
    resamples them as equal cells of the clip, ``align_corners=False``.)

    Args:
        num_frames: Clip length T the table is built for.
        num_heads: Attention heads; each has its own bias.
    """

    def __init__(self, num_frames: int, num_heads: int) -> None:
        super().__init__()
        check_positive("RelativeTemporalBias num_frames", num_frames)
        check_positive("RelativeTemporalBias num_heads", num_heads)
        self.weight = nn.Parameter(torch.zeros(2 * num_frames - 1, num_heads))

    @property
    def num_frames(self) -> int:
        return (self.weight.shape[0] + 1) // 2

    def table(self, num_frames: int) -> torch.Tensor:
        """The (2 * num_frames - 1, heads) table, resampled along the offset axis if needed."""
        built = self.num_frames
        if num_frames == built:
            return self.weight
        if num_frames == 1 or built == 1:
            # Only the zero offset exists on one side: take it, or repeat it for every offset.
            return self.weight[built - 1 : built].expand(2 * num_frames - 1, -1)
        # (2T-1, heads) -> (1, heads, 2T-1) for 1-D interpolation over offsets, and back.
        resized = F.interpolate(self.weight.t()[None], size=2 * num_frames - 1, mode="linear", align_corners=True)
        return resized[0].t()

    def forward(self, num_frames: int) -> torch.Tensor:
        """The additive attention bias (heads, T, T) (query frame, key frame) for clips of ``num_frames`` frames,
        in the table's dtype and on its device."""
        table = self.table(num_frames)
        frames = torch.arange(num_frames, device=table.device)
        offsets = frames[:, None] - frames[None, :] + num_frames - 1  # (T, T), query minus key
        return table[offsets].permute(2, 0, 1)  # (heads, T, T)

    def extra_repr(self) -> str:
        return f"num_frames={self.num_frames}, num_heads={self.weight.shape[1]}"
