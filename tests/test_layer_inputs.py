"""The layers and counters refuse bad sizes with one clear ValueError instead of a wrong result or a raw torch error."""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import adaptkit
from adaptkit.data import mean_class_accuracy
from adaptkit.layers import Adapter, LinearAdapter, STAdapter, TemporalEmbedding, shift_heads
from conftest import BACKBONES

NOT_WHOLE_CLIPS = "7 frame-folded rows are not a whole number of 4-frame clips"


@pytest.mark.parametrize("kernel", [(2, 1, 1), (3, 2, 1), (3, 1, 4), (0, 1, 1), (-1, 1, 1), (3, 1), (3, 1, 1, 1)])
def test_st_adapter_refuses_a_kernel_that_is_not_three_odd_positive_sizes(kernel):
    # An even time size used to pad to T+1 frames and return (B*(T+1), h, w, D): the wrong batch, silently.
    with pytest.raises(ValueError, match="odd positive sizes"):
        STAdapter(8, 4, kernel=kernel)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), frames=st.integers(1, 5), t=st.sampled_from([1, 3, 5]), s=st.sampled_from([1, 3]))
def test_st_adapter_with_any_odd_kernel_keeps_every_frame_and_position(batch, frames, t, s):
    adapter = STAdapter(8, 4, kernel=[t, s, s])  # a list, as a config file gives it
    grid = torch.randn(batch * frames, 2, 3, 8)
    assert adapter(grid, frames).shape == grid.shape


def test_layers_that_regroup_frames_refuse_rows_that_are_not_whole_clips():
    with pytest.raises(ValueError, match=NOT_WHOLE_CLIPS):
        STAdapter(8, 4)(torch.randn(7, 2, 2, 8), 4)
    with pytest.raises(ValueError, match=NOT_WHOLE_CLIPS):
        TemporalEmbedding(4, 8)(torch.randn(7, 5, 8), 4)
    with pytest.raises(ValueError, match=NOT_WHOLE_CLIPS):
        shift_heads(torch.randn(7, 5, 2, 3), 4, (-1, 1))
    for frames in (0, -2):
        with pytest.raises(ValueError, match="num_frames must be a positive"):
            TemporalEmbedding(4, 8)(torch.randn(8, 5, 8), frames)


@pytest.mark.parametrize("ratio", [0, -1, -0.25, float("nan")])
def test_adapters_refuse_a_bottleneck_ratio_that_is_not_positive(ratio):
    # Both used to build quietly with one hidden unit.
    with pytest.raises(ValueError, match="Adapter ratio must be > 0"):
        Adapter(8, ratio=ratio)
    with pytest.raises(ValueError, match="LinearAdapter ratio must be > 0"):
        LinearAdapter(8, ratio=ratio)


def test_a_tiny_positive_ratio_still_gets_one_hidden_unit():
    assert Adapter(8, ratio=0.01).fc1.out_features == 1
    assert LinearAdapter(8, ratio=0.01).down.out_features == 1


@pytest.mark.parametrize("frames", [0, -3])
def test_temporal_embedding_refuses_a_clip_length_that_is_not_positive(frames):
    with pytest.raises(ValueError, match="TemporalEmbedding num_frames must be > 0"):
        TemporalEmbedding(frames, 8)


@pytest.mark.parametrize(("options", "message"), [
    ({"num_frames": 0}, "num_frames must be a positive integer, got 0"),  # used to count the model's T instead
    ({"num_frames": -1}, "num_frames"),
    ({"num_frames": 2.5}, "num_frames"),
    ({"views": -1}, "views must be a positive integer, got -1"),  # used to return a negative cost
    ({"views": 0}, "views"),
    ({"views": True}, "views"),
])
def test_count_flops_refuses_view_and_frame_counts_that_are_not_positive(options, message):
    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=2, num_classes=5)
    with pytest.raises(ValueError, match=message):
        adaptkit.count_flops(vm, image_size=size, **options)


def test_count_flops_with_num_frames_none_counts_the_models_clip_length():
    factory, size = BACKBONES["timm_vit"]
    vm = adaptkit.inject(factory(), "aim", num_frames=2, num_classes=5)
    assert adaptkit.count_flops(vm, image_size=size) == adaptkit.count_flops(vm, image_size=size, num_frames=2)
    assert adaptkit.count_flops(vm, image_size=size, views=3) == pytest.approx(
        3 * adaptkit.count_flops(vm, image_size=size, num_frames=None))


def _mean_class_accuracy_by_loop(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The definition written out: top-1 recall of each class present in ``labels``, averaged."""
    correct = (scores.argmax(dim=1) == labels).float()
    return torch.stack([correct[labels == c].mean() for c in labels.unique()]).mean().item()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 12), data=st.data())
def test_mean_class_accuracy_equals_the_per_class_loop_exactly(n, k, data):
    labels = torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    hits = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    scores = torch.rand(n, k)
    scores[hits, labels[hits]] = 2.0  # these samples are top-1 hits; the rest are hits only by chance
    assert mean_class_accuracy(scores, labels) == _mean_class_accuracy_by_loop(scores, labels)


def test_mean_class_accuracy_refuses_negative_labels():
    with pytest.raises(ValueError, match="class indices >= 0"):
        mean_class_accuracy(torch.rand(3, 2), torch.tensor([0, -1, 1]))


def test_more_sizes_that_cannot_work_are_refused():
    from adaptkit.data import top_k_accuracy
    from adaptkit.layers import RelativeTemporalBias, attend_frames

    with pytest.raises(ValueError, match="num_frames must be > 0"):
        RelativeTemporalBias(0, 2)
    with pytest.raises(ValueError, match="num_frames must be a positive number of frames"):
        attend_frames(torch.randn(4, 3, 3, 2, 8), 0, scale=0.3)
    with pytest.raises(ValueError, match="STAdapter hidden must be > 0"):
        STAdapter(8, 0)
    with pytest.raises(ValueError, match="labels must be class indices >= 0"):
        top_k_accuracy(torch.randn(2, 3), torch.tensor([0, -1]))
    video_model = adaptkit.inject(timm.create_model("test_vit"), "aim", num_frames=2, num_classes=3)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        adaptkit.count_flops(video_model, image_size=0)
