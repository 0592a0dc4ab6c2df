"""Metrics on hand-computed examples; multi-view scores; an evaluation run that records the video ids."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from adaptkit import NoReadableVideoError
from adaptkit.data import (
    SKIPPED_LABEL,
    DenseSampler,
    EvaluationResult,
    MultiViewDataset,
    VideoNormalize,
    VideoRecord,
    evaluate_multi_view,
    mean_class_accuracy,
    multi_view_scores,
    top_k_accuracy,
    write_corrupt_video,
)

from ._videos import write_gray_video

SCORES = torch.tensor(
    [
        [0.1, 0.6, 0.3, 0.0],  # label 1: top-1 hit
        [0.5, 0.2, 0.3, 0.0],  # label 2: rank 2
        [0.1, 0.2, 0.3, 0.4],  # label 0: rank 4
        [0.7, 0.1, 0.1, 0.1],  # label 0: top-1 hit
    ]
)
LABELS = torch.tensor([1, 2, 0, 0])


def test_top_k_accuracy_by_hand():
    assert top_k_accuracy(SCORES, LABELS, 1) == pytest.approx(2 / 4)
    assert top_k_accuracy(SCORES, LABELS, 2) == pytest.approx(3 / 4)
    assert top_k_accuracy(SCORES, LABELS, 3) == pytest.approx(3 / 4)
    assert top_k_accuracy(SCORES, LABELS, 5) == 1.0  # k capped at the number of classes


def test_mean_class_accuracy_by_hand():
    # class 0: 1 of 2 right, class 1: 1 of 1, class 2: 0 of 1 -> (0.5 + 1 + 0) / 3; class 3 is absent
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx(0.5)


def test_metric_shape_checks():
    with pytest.raises(ValueError):
        top_k_accuracy(SCORES, LABELS[:3])
    with pytest.raises(ValueError):
        mean_class_accuracy(SCORES[0], LABELS)


def view_model(views_seen: list[int]):
    """(N, C, T, H, W) -> logits [m, -m, 0] from the mean pixel m; records each batch size."""

    def model(x: torch.Tensor) -> torch.Tensor:
        views_seen.append(x.shape[0])
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([m, -m, torch.zeros_like(m)], dim=1)

    return model


def identity_prepare(chunk: torch.Tensor) -> torch.Tensor:
    return chunk.float().div(255).permute(0, 2, 1, 3, 4)  # (N, C, T, H, W)


def test_multi_view_scores_are_the_mean_softmax_over_views():
    levels = torch.tensor([[0, 255, 51], [102, 102, 102]], dtype=torch.uint8)  # (B=2, V=3)
    views = levels.view(2, 3, 1, 1, 1, 1).expand(2, 3, 2, 3, 4, 4).contiguous()
    scores = multi_view_scores(view_model([]), views, identity_prepare, chunk_size=2)
    m = levels.float() / 255
    expected = torch.stack([m, -m, torch.zeros_like(m)], dim=2).softmax(dim=2).mean(dim=1)
    assert scores.shape == (2, 3) and torch.allclose(scores, expected)
    assert torch.allclose(scores.sum(1), torch.ones(2))


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 3), num_views=st.integers(1, 5), chunk_size=st.integers(1, 7))
def test_chunking_bounds_the_forward_size_and_does_not_change_scores(batch, num_views, chunk_size):
    views = torch.randint(0, 256, (batch, num_views, 2, 3, 4, 4), dtype=torch.uint8)
    seen: list[int] = []
    chunked = multi_view_scores(view_model(seen), views, identity_prepare, chunk_size=chunk_size)
    whole = multi_view_scores(view_model([]), views, identity_prepare, chunk_size=batch * num_views)
    assert max(seen) <= chunk_size and sum(seen) == batch * num_views
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_evaluation_result_json_round_trip(tmp_path):
    result = EvaluationResult.from_scores(SCORES, LABELS, ["a", "b", "c", "d"], views="8x3x1", skipped_ids=["e"])
    assert (result.top1, result.top5, result.mean_class_accuracy, result.num_videos) == (0.5, 1.0, 0.5, 4)
    result.to_json(tmp_path / "result.json")
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["video_ids"] == ["a", "b", "c", "d"] and stored["skipped_ids"] == ["e"] and stored["views"] == "8x3x1"
    assert EvaluationResult.from_json(tmp_path / "result.json") == result
    with pytest.raises(ValueError, match="video ids"):
        EvaluationResult.from_scores(SCORES, LABELS, ["a"])


def test_evaluate_multi_view_end_to_end_leaves_out_unreadable_videos(tmp_path):
    gray = str(write_gray_video(tmp_path / "gray.mp4", 20))
    bad = str(write_corrupt_video(tmp_path / "bad.mp4", "garbage"))
    records = [VideoRecord(gray, 0, "bright"), VideoRecord(bad, 1, "broken"), VideoRecord(gray, 1, "again")]
    ds = MultiViewDataset(records, DenseSampler(4, 2, num_clips=2, test_mode=True), crop_size=16, num_crops=3)
    seen: list[int] = []
    prepare = VideoNormalize([0.0] * 3, [1.0] * 3).eval()
    result = evaluate_multi_view(view_model(seen), DataLoader(ds, batch_size=2), prepare, chunk_size=4, views="4x2x3")
    assert result.video_ids == ["bright", "again"] and result.skipped_ids == ["broken"]
    assert result.num_videos == 2 and result.views == "4x2x3"
    # the model's class 0 wins for any non-black video: label 0 right, label 1 wrong
    assert result.top1 == 0.5 and result.mean_class_accuracy == 0.5 and result.top5 == 1.0
    assert max(seen) <= 4 and sum(seen) == 2 * 6


def test_an_evaluation_without_one_readable_video_raises_a_typed_error():
    skipped_only = [(torch.zeros(2, 1, 2, 3, 8, 8, dtype=torch.uint8), torch.tensor([SKIPPED_LABEL] * 2), ["a", "b"])]
    with pytest.raises(NoReadableVideoError, match=r"no readable videos to evaluate \(2 skipped\)"):
        evaluate_multi_view(lambda clips: torch.zeros(len(clips), 3), skipped_only, lambda views: views.float())
