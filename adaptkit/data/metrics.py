"""Classification metrics for video evaluation and a JSON-serialisable result record."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..io import atomic_write_text

__all__ = ["EvaluationResult", "mean_class_accuracy", "top_k_accuracy"]


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"expected scores (N, K) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("no samples")
    if bool((labels < 0).any()):
        raise ValueError(f"labels must be class indices >= 0, got {int(labels.min())}")


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest scores (k is capped at the number of classes).

    Args:
        scores: (N, K) class scores (logits or probabilities: only their order counts).
        labels: (N,) integer class indices.
        k: How many of the highest scores count as a hit.

    Returns:
        A fraction in [0, 1] (0.93, not 93).

    Raises:
        ValueError: if the shapes are not (N, K) and (N,), N is 0, or a label is negative.

    Example:
        >>> top_k_accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
        0.5
    """
    _check(scores, labels)
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (N, k)
    return (top == labels.to(top.device)[:, None]).any(dim=1).float().mean().item()


def mean_class_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 recall per class, averaged over the classes that occur in ``labels``.

    Args:
        scores: (N, K) class scores.
        labels: (N,) integer class indices >= 0.

    Returns:
        A fraction in [0, 1].

    Raises:
        ValueError: if the shapes are not (N, K) and (N,), N is 0, or a label is negative.

    Example:
        >>> mean_class_accuracy(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]]), torch.tensor([0, 0, 1]))
        0.5
    """
    _check(scores, labels)
    labels = labels.to(scores.device).long()
    correct = scores.argmax(dim=1) == labels
    # Per-class sample and hit counts (integer bincounts: exact and deterministic on CUDA too); classes absent from
    # ``labels`` are left out of the mean.
    counts = torch.bincount(labels)
    hits = torch.bincount(labels[correct], minlength=counts.numel())
    present = counts > 0
    return (hits[present].float() / counts[present].float()).mean().item()


@dataclass
class EvaluationResult:
    """What an evaluation measured and on exactly which videos (validation sets differ between dataset copies).

    The accuracies are fractions in [0, 1] (0.839, not 83.9 as the papers print them).
    """

    top1: float  # fraction of videos whose top-1 class is the label
    top5: float  # fraction of videos whose label is among the 5 highest scores (all classes when K < 5)
    mean_class_accuracy: float  # top-1 recall per class, averaged over the classes present
    num_videos: int
    views: str = ""  # frames x temporal clips x spatial crops, e.g. "8x3x1"
    video_ids: list[str] = field(default_factory=list)  # evaluated videos, in order
    skipped_ids: list[str] = field(default_factory=list)  # unreadable videos, left out of the metrics
    extra: dict[str, Any] = field(default_factory=dict)  # free-form context: checkpoint, dataset version ...
    labels: list[int] = field(default_factory=list)  # true class per evaluated video, in order
    predictions: list[int] = field(default_factory=list)  # top-1 class per evaluated video, in order

    @classmethod
    def from_scores(
        cls,
        scores: torch.Tensor,
        labels: torch.Tensor,
        video_ids: Sequence[str],
        views: str = "",
        skipped_ids: Sequence[str] = (),
    ) -> EvaluationResult:
        """Compute the metrics from (N, K) scores (e.g. mean softmax over views) and (N,) labels.

        Args:
            scores: (N, K) class scores, e.g. :func:`multi_view_scores`.
            labels: (N,) integer class indices.
            video_ids: N ids, in the order of the rows.
            views: The view notation, frames x temporal clips x spatial crops, e.g. ``"8x3x1"``.
            skipped_ids: Unreadable videos left out of the metrics.

        Raises:
            ValueError: if ``video_ids`` does not have N entries, or the scores and labels are not (N, K) and
                (N,) with N >= 1.
        """
        if len(video_ids) != labels.shape[0]:
            raise ValueError(f"{len(video_ids)} video ids for {labels.shape[0]} labels")
        return cls(
            top1=top_k_accuracy(scores, labels, 1),
            top5=top_k_accuracy(scores, labels, 5),
            mean_class_accuracy=mean_class_accuracy(scores, labels),
            num_videos=int(labels.shape[0]),
            views=views,
            video_ids=[str(v) for v in video_ids],
            skipped_ids=[str(v) for v in skipped_ids],
            labels=labels.tolist(),
            predictions=scores.argmax(dim=1).tolist(),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the result, including the evaluated and skipped video ids, as indented JSON (atomically: a kill
        mid-write leaves the previous file)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> EvaluationResult:
        with open(path, encoding="utf-8") as file:
            return cls(**json.load(file))
