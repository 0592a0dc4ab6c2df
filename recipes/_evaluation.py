"""Multi-view evaluation of a recipe's model, sharded over ranks: :func:`adaptkit.data.evaluate_multi_view`.

Each rank scores every ``world_size``-th video (no padding, so no video is counted twice); a video's score is the mean
of the softmax over its views; the shares are gathered so the accuracies cover the whole dataset.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from adaptkit.data import EvaluationResult, evaluate_multi_view, prepare_batch
from recipes._distributed import World, all_gather_objects
from recipes._workers import stopping_workers


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
    pin_memory: bool = True,
) -> EvaluationResult | None:
    """Evaluate ``model`` on ``dataset`` (items ``(uint8 views (V, T, C, H, W), label, video_id)``).

    ``pin_memory`` (on CUDA) is False for views decoded on the GPU already.

    Returns:
        The result on rank 0 (with the evaluated and skipped video ids, in dataset order, and in
        ``extra["skipped"]`` the ``[path, reason]`` of each unreadable video, gathered from every rank); None on other
        ranks.
    """
    was_training = model.training
    model.eval()
    mean, std = normalization
    shard = Subset(dataset, range(world.rank, len(dataset), world.world_size))
    # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG, which training's
    # dropout and drop path draw from, so an evaluation would change the training that follows it (and a resume
    # after an epoch's evaluation would not repeat the uninterrupted run).
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers,
                        pin_memory=pin_memory and world.device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))

    def forward(video: torch.Tensor) -> torch.Tensor:  # normalised (N, C, T, H, W) -> logits (N, K)
        with autocast(world.device, bf16):
            return model(video)

    try:
        batches = iter(loader)  # its workers stop however the evaluation ends, not when an error's traceback is freed
        with stopping_workers(batches):
            result = evaluate_multi_view(forward, batches, lambda clips: prepare_batch(clips, mean, std), chunk_size,
                                         device=world.device, views=views, progress=world.is_main,
                                         shard=(world.rank, world.world_size))
    finally:
        model.train(was_training)
    # Each rank's dataset knows why its own share's videos were unreadable: gather the reasons (collective).
    reasons = all_gather_objects(world, list(dataset.skipped()) if hasattr(dataset, "skipped") else [])
    if not world.is_main:
        return None
    result.extra["skipped"] = [list(item) for item in sorted({tuple(s) for rank in reasons for s in rank})]
    return result


def format_skipped(result: EvaluationResult) -> str:
    """The videos left out of ``result`` (missing or unreadable), one per line with the reason, or that none were."""
    skipped = result.extra.get("skipped") or [[video_id, "unreadable"] for video_id in result.skipped_ids]
    if not skipped:
        return "no videos skipped"
    lines = [f"  {path} ({reason})" for path, reason in skipped]
    return "\n".join([f"{len(skipped)} videos left out (missing or unreadable):", *lines])


def format_result(result: EvaluationResult, num_classes: int) -> str:
    """One line: accuracies with chance level (top-5 only beyond 5 classes, where it means something), views and
    video counts."""
    skipped = f", {len(result.skipped_ids)} skipped (missing or unreadable)" if result.skipped_ids else ""
    top5 = f" | top-5 {100 * result.top5:.1f}%" if num_classes > 5 else ""
    return (
        f"top-1 {100 * result.top1:.1f}% (chance {100 / num_classes:.1f}%){top5} | "
        f"mean class {100 * result.mean_class_accuracy:.1f}% | {result.num_videos} videos, views {result.views}"
        f"{skipped}"
    )
