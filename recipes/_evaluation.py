"""Multi-view evaluation over a dataset, sharded over ranks and gathered with ``torch.distributed``.

Each rank scores every ``world_size``-th video (no padding, so no video is counted twice); scores are the mean of
the softmax over a video's views; rank 0 computes top-1 / top-5 / mean-class accuracy on the gathered scores.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from adaptkit.data import SKIPPED_LABEL, EvaluationResult, multi_view_scores, prepare_batch
from recipes._distributed import World, all_gather_objects


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device when asked for, otherwise nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    world: World,
    normalization: tuple[tuple[float, ...], tuple[float, ...]],
    views: str,
    batch_size: int,
    chunk_size: int,
    num_workers: int,
    bf16: bool = False,
    progress: bool = True,
) -> EvaluationResult | None:
    """Evaluate ``model`` on ``dataset`` (items ``(uint8 views (V, T, C, H, W), label, video_id)``).

    Returns:
        The result on rank 0 (with the evaluated and skipped video ids, in dataset order); None on other ranks.
    """
    was_training = model.training
    model.eval()
    mean, std = normalization
    shard = Subset(dataset, range(world.rank, len(dataset), world.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, pin_memory=world.device.type == "cuda")

    def prepare(clips: torch.Tensor) -> torch.Tensor:  # uint8 (N, T, C, H, W) -> normalised (N, C, T, H, W)
        return prepare_batch(clips, mean, std)

    def forward(video: torch.Tensor) -> torch.Tensor:
        with autocast(world.device, bf16):
            return model(video)

    # Per video: its position in the dataset (to restore the order after gathering), id, scores and label.
    positions, ids, scores, labels, skipped = [], [], [], [], []
    position = iter(range(world.rank, len(dataset), world.world_size))
    bar = tqdm(loader, desc=f"evaluate {views}", unit="batch", disable=not (progress and world.is_main), leave=False)
    for batch_views, batch_labels, batch_ids in bar:
        batch_labels = torch.as_tensor(batch_labels)
        keep = batch_labels != SKIPPED_LABEL  # unreadable videos come back labelled SKIPPED_LABEL
        for video_id, kept in zip(batch_ids, keep.tolist()):
            index = next(position)
            if kept:
                positions.append(index)
                ids.append(video_id)
            else:
                skipped.append((index, video_id))
        if keep.any():
            device_views = batch_views[keep].to(world.device, non_blocking=True)  # uint8 (b, V, T, C, H, W)
            scores.append(multi_view_scores(forward, device_views, prepare, chunk_size).cpu())  # (b, K)
            labels.append(batch_labels[keep])
    local = (positions, ids, torch.cat(scores) if scores else None, torch.cat(labels) if labels else None, skipped)
    gathered = all_gather_objects(world, local)
    model.train(was_training)
    if not world.is_main:
        return None
    rows = sorted(
        (pos, video_id, rank_scores[i], rank_labels[i])
        for rank_positions, rank_ids, rank_scores, rank_labels, _ in gathered
        for i, (pos, video_id) in enumerate(zip(rank_positions, rank_ids))
    )
    all_skipped = [video_id for _, video_id in sorted(s for *_, rank_skipped in gathered for s in rank_skipped)]
    if not rows:
        raise RuntimeError(f"no readable videos to evaluate ({len(all_skipped)} skipped)")
    return EvaluationResult.from_scores(
        torch.stack([row[2] for row in rows]), torch.stack([row[3] for row in rows]), [row[1] for row in rows],
        views=views, skipped_ids=all_skipped,
    )


def format_result(result: EvaluationResult, num_classes: int) -> str:
    """One line: accuracies with chance level, views and video counts."""
    skipped = f", {len(result.skipped_ids)} unreadable skipped" if result.skipped_ids else ""
    return (
        f"top-1 {100 * result.top1:.1f}% (chance {100 / num_classes:.1f}%) | top-5 {100 * result.top5:.1f}% | "
        f"mean class {100 * result.mean_class_accuracy:.1f}% | {result.num_videos} videos, views {result.views}"
        f"{skipped}"
    )
