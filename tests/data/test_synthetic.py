"""Synthetic motion data: deterministic, class = motion direction, reversal gives the opposite class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptkit.data import (
    DenseSampler,
    SyntheticMotionDataset,
    VideoClipDataset,
    VideoDecodeError,
    decode_frames,
    load_annotations,
    motion_class_names,
    motion_clip,
    write_corrupt_video,
    write_synthetic_videos,
)


def estimated_class(clip: torch.Tensor, num_classes: int) -> int:
    """Direction of the bright square's centroid from the first to the last frame, as the nearest class."""
    bright = clip.float().mean(dim=1) > 130  # (T, H, W): the square is >= 110 brighter than the background
    rows, cols = torch.meshgrid(torch.arange(clip.shape[2]), torch.arange(clip.shape[3]), indexing="ij")
    centroids = [(rows[m].float().mean().item(), cols[m].float().mean().item()) for m in bright]
    (y0, x0), (y1, x1) = centroids[0], centroids[-1]
    angle = math.atan2(-(y1 - y0), x1 - x0)  # counter-clockwise on screen; rows grow downwards
    return round(angle / (2 * math.pi / num_classes)) % num_classes


def test_same_index_same_clip_other_seed_other_clip():
    a, _, _ = SyntheticMotionDataset(10, num_frames=8, size=32, seed=1)[3]
    b, _, _ = SyntheticMotionDataset(10, num_frames=8, size=32, seed=1)[3]
    c, _, _ = SyntheticMotionDataset(10, num_frames=8, size=32, seed=2)[3]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.uint8


@pytest.mark.parametrize("num_classes", [2, 4, 8])
def test_label_is_the_motion_direction_and_reversal_gives_the_opposite_class(num_classes):
    ds = SyntheticMotionDataset(3 * num_classes, num_frames=12, size=48, num_classes=num_classes, seed=5)
    assert ds.classes == motion_class_names(num_classes)
    for i in range(len(ds)):
        clip, label, index = ds[i]
        assert (label, index) == (i % num_classes, i)
        assert estimated_class(clip, num_classes) == label
        assert estimated_class(clip.flip(0), num_classes) == (label + num_classes // 2) % num_classes


def test_a_reversed_clip_has_the_same_frames_as_some_clip_of_the_opposite_class():
    # Order-blind statistics cannot separate a class from its opposite: the frame sets match exactly when the
    # trajectory midpoint, speed, textures and noise are shared (here: rendered with the same random draws).
    clip, label = motion_clip(0, num_frames=10, size=32, num_classes=2, seed=0)
    assert label == 0
    frames = {bytes(f.numpy()) for f in clip}
    assert frames == {bytes(f.numpy()) for f in clip.flip(0)}  # reversal only reorders the frames
    assert not torch.equal(clip, clip.flip(0))


def test_same_item_contract_as_video_clip_dataset_and_transform_hook():
    ds = SyntheticMotionDataset(4, num_frames=8, size=32, transform=lambda clip: clip[:, :, :16, :16])
    clip, label, index = ds[2]
    assert clip.shape == (8, 3, 16, 16) and isinstance(label, int) and index == 2
    assert ds.skipped_summary() == "no videos skipped"
    with pytest.raises(IndexError):
        ds[4]


@pytest.mark.parametrize(
    "kwargs", [dict(num_classes=3), dict(num_classes=0), dict(num_frames=1), dict(size=8), dict(num_videos=0)]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SyntheticMotionDataset(**{"num_videos": 4, **kwargs})


def test_written_videos_decode_back_to_the_generated_clips(tmp_path):
    list_file = write_synthetic_videos(tmp_path, 6, num_frames=10, size=32, num_classes=2, seed=4)
    from_list = load_annotations("video_list", list_file, root=tmp_path)
    from_tree = load_annotations("folder_tree", tmp_path)
    assert from_tree.classes == motion_class_names(2)
    assert sorted((r.path, r.label) for r in from_list.records) == sorted((r.path, r.label) for r in from_tree.records)
    for record in from_list.records:
        index = int(record.video_id.rsplit("_", 1)[1])
        clip, label = motion_clip(index, num_frames=10, size=32, num_classes=2, seed=4)
        decoded = decode_frames(record.path, np.arange(10))
        assert record.label == label
        # Lossy (4:2:0 chroma cannot keep per-pixel colour noise), so compare brightness: about 7 here, about 30
        # between two different clips.
        assert (decoded.float().mean(1) - clip.float().mean(1)).abs().mean() < 12
        assert estimated_class(decoded, 2) == label
    clip, label, _ = VideoClipDataset(from_list, DenseSampler(4, 2))[0]
    assert clip.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_corrupt_files_fail_to_decode(tmp_path, kind):
    path = write_corrupt_video(tmp_path / f"{kind}.mp4", kind)
    with pytest.raises(VideoDecodeError):
        decode_frames(path, [0])


def test_unknown_corruption_kind(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        write_corrupt_video(tmp_path / "x.mp4", "scrambled")
