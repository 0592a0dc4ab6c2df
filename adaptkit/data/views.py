"""Multi-view evaluation: run every view through the model in chunks, average the softmax probabilities."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed
from tqdm import tqdm

from ..errors import NoReadableVideoError
from .dataset import SKIPPED_LABEL
from .metrics import EvaluationResult

__all__ = ["evaluate_multi_view", "multi_view_scores"]

Model = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def multi_view_scores(
    model: Model,
    views: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int = 8,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Video scores = mean over views of the softmax probabilities.

    Args:
        model: (N, C, T, H, W) float -> (N, num_classes) logits; put it in eval mode first.
        views: uint8 (B, V, T, C, H, W), e.g. a batch from :class:`MultiViewDataset`.
        prepare: uint8 (N, T, C, H, W) -> model input (N, C, T, H, W), e.g. ``VideoNormalize(mean, std).eval()``.
        chunk_size: views per forward pass, to bound memory.
        device: where the model runs; None keeps the views where they are.

    Returns:
        (B, num_classes) float32 probabilities on the model's output device.

    Raises:
        ValueError: if ``views`` is not 6-D or ``chunk_size`` < 1.
    """
    if views.ndim != 6:
        raise ValueError(f"expected views (B, V, T, C, H, W), got shape {tuple(views.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, num_views = views.shape[:2]
    flat = views.flatten(0, 1)  # (B*V, T, C, H, W)
    probabilities = []
    for chunk in flat.split(chunk_size):
        chunk = chunk if device is None else chunk.to(device, non_blocking=True)
        probabilities.append(model(prepare(chunk)).float().softmax(dim=-1))  # (n, K)
    return torch.cat(probabilities).view(batch, num_views, -1).mean(dim=1)  # (B, K)


def evaluate_multi_view(
    model: Model,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor, list[str]]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int = 8,
    device: torch.device | str | None = None,
    views: str = "",
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> EvaluationResult:
    """Evaluate over a loader of ``(views, labels, video_ids)`` batches (a DataLoader over MultiViewDataset).

    Items labelled ``SKIPPED_LABEL`` (unreadable videos) are left out of the metrics and listed in
    ``skipped_ids``; ``video_ids`` lists exactly the evaluated videos, in dataset order.

    Args:
        model: (N, C, T, H, W) -> logits, in eval mode.
        loader: yields uint8 views (B, V, T, C, H, W), int labels (B,), video ids (B,).
        prepare: uint8 (N, T, C, H, W) -> model input (N, C, T, H, W).
        chunk_size: views per forward pass.
        device: where the model runs.
        views: the view notation to record, e.g. ``"8x3x1"``.
        progress: show a tqdm progress bar.
        shard: ``(rank, world_size)`` when ``loader`` yields only this process's share of the dataset: the videos
            at positions ``rank, rank + world_size, ...`` (e.g. a DataLoader over
            ``Subset(dataset, range(rank, len(dataset), world_size))``; no padding, so no video counts twice). With
            ``world_size > 1`` the shares are gathered with ``torch.distributed.all_gather_object`` (the process
            group must be initialised) and every process gets the result over the whole dataset.

    Returns:
        Top-1, top-5 and mean class accuracy as fractions in [0, 1], the evaluated / skipped video ids.

    Raises:
        ValueError: if ``shard`` is not (rank, world_size) with 0 <= rank < world_size, or a batch's views are
            not 6-D or ``chunk_size`` < 1 (:func:`multi_view_scores`).
        NoReadableVideoError: (a RuntimeError) no readable video at all.
    """
    rank, world_size = shard
    if not 0 <= rank < world_size:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
    positions = itertools.count(rank, world_size)  # each item's position in the whole dataset
    rows: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []  # (position, id, scores (K,), label)
    skipped: list[tuple[int, str]] = []
    for batch_views, labels, video_ids in tqdm(loader, desc=f"evaluate {views}".strip(), disable=not progress,
                                               leave=False):
        labels = torch.as_tensor(labels)
        keep = labels != SKIPPED_LABEL
        batch_positions = [next(positions) for _ in video_ids]
        skipped += [(p, str(v)) for p, v, k in zip(batch_positions, video_ids, keep.tolist()) if not k]
        if not keep.any():
            continue
        scores = multi_view_scores(model, batch_views[keep], prepare, chunk_size, device).cpu()  # (b, K)
        kept = [(p, str(v)) for p, v, k in zip(batch_positions, video_ids, keep.tolist()) if k]
        rows += [(p, v, s, y) for (p, v), s, y in zip(kept, scores, labels[keep])]
    if world_size > 1:
        gathered: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(gathered, (rows, skipped))
        rows = [row for part_rows, _ in gathered for row in part_rows]
        skipped = [item for _, part_skipped in gathered for item in part_skipped]
    rows.sort(key=lambda row: row[0])
    skipped.sort()
    if not rows:
        raise NoReadableVideoError(f"no readable videos to evaluate ({len(skipped)} skipped)")
    return EvaluationResult.from_scores(
        torch.stack([row[2] for row in rows]), torch.stack([row[3] for row in rows]), [row[1] for row in rows],
        views, [video_id for _, video_id in skipped],
    )
