"""Generated action videos: deterministic, cached by settings, and every odd video the exact reversal of the one before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptkit.data import (
    ACTION_CLASSES,
    ActionVideoSettings,
    SegmentSampler,
    action_video,
    count_frames,
    decode_frames,
    generate_action_dataset,
    load_annotations,
    mirror_lengths,
    reversed_partner,
)

TINY = ActionVideoSettings(train_videos=10, val_videos=2, size=16, min_seconds=2.0, max_seconds=2.5, mirror_clip_len=4)


def test_rendering_is_a_pure_function_of_settings_seed_and_index() -> None:
    a, label_a, fps_a = action_video(3, TINY, seed=7)
    b, label_b, fps_b = action_video(3, TINY, seed=7)
    c, _, _ = action_video(3, TINY, seed=8)
    assert torch.equal(a, b) and (label_a, fps_a) == (label_b, fps_b)
    assert a.dtype == torch.uint8 and a.shape[1:] == (3, 16, 16)
    assert a.shape != c.shape or not torch.equal(a, c)


def test_classes_come_in_balanced_time_reversed_pairs() -> None:
    assert len(ACTION_CLASSES) == 10
    labels = [action_video(i, TINY, seed=0)[1] for i in range(10)]
    assert labels == [0, 2, 4, 6, 8] * 2  # forward classes cycle; the reversal is the partner
    assert [reversed_partner(c) for c in range(4)] == [1, 0, 3, 2]


def test_lengths_vary_between_2_and_6_seconds_and_test_sampling_is_mirror_symmetric() -> None:
    default = ActionVideoSettings()
    lengths = []
    for pair in range(30):
        video, _, fps = action_video(pair, default, seed=1)
        n = video.shape[0]
        assert 2.0 <= n / fps <= 6.0 + 1e-9 and 12 <= fps <= 30
        indices = SegmentSampler(default.mirror_clip_len, test_mode=True)(n)[0]
        np.testing.assert_array_equal(np.sort(n - 1 - indices), indices)
        lengths.append(n)
    assert len(set(lengths)) >= 8


@settings(max_examples=30, deadline=None)
@given(clip_len=st.integers(1, 16), low=st.integers(1, 200), span=st.integers(0, 200))
def test_mirror_lengths_are_exactly_the_symmetric_ones(clip_len: int, low: int, span: int) -> None:
    sampler = SegmentSampler(clip_len, test_mode=True)
    symmetric = {n for n in range(low, low + span + 1)
                 if np.array_equal(np.sort(n - 1 - sampler(n)[0]), sampler(n)[0])}
    assert set(mirror_lengths(clip_len, low, low + span)) == symmetric


def test_written_reversed_pairs_decode_to_exact_frame_reversals(tmp_path) -> None:
    dataset = generate_action_dataset(TINY, tmp_path)
    annotations = load_annotations("video_list", dataset.train_list, root=dataset.root, classes=list(dataset.classes))
    assert len(annotations) == TINY.train_videos and annotations.classes == list(ACTION_CLASSES)
    records = annotations.records
    for forward, backward in zip(records[0::2], records[1::2]):
        assert backward.label == reversed_partner(forward.label)
        n = count_frames(forward.path)
        assert count_frames(backward.path) == n
        a = decode_frames(forward.path, np.arange(n))  # every frame, (T, C, H, W)
        b = decode_frames(backward.path, np.arange(n))
        assert torch.equal(a, b.flip(0))  # lossless coding: decoded frame i is decoded frame n - 1 - i
        rendered, _, _ = action_video(records.index(forward) // 2, TINY, TINY.seed)
        assert rendered.shape[0] == n
        assert (a.float() - rendered.float()).abs().mean() < 10  # the only loss: 4:2:0 chroma (coarse at 16 px)


def test_generation_is_deterministic_and_cached_by_settings(tmp_path) -> None:
    first = generate_action_dataset(TINY, tmp_path / "a")
    again = generate_action_dataset(TINY, tmp_path / "b")
    assert first.root.name == again.root.name  # the folder is named by the settings' hash
    for name in ("train/train_00003.mp4", "val/val_00001.mp4"):
        n = count_frames(first.root / name)
        assert torch.equal(decode_frames(first.root / name, np.arange(n)), decode_frames(again.root / name, np.arange(n)))
    stamp = (first.root / "train.txt").stat().st_mtime_ns
    assert generate_action_dataset(TINY, tmp_path / "a") == first
    assert (first.root / "train.txt").stat().st_mtime_ns == stamp  # reused, not rewritten
    other = ActionVideoSettings(**{**TINY.__dict__, "seed": 1})
    assert generate_action_dataset(other, tmp_path / "a").root != first.root
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize("field, value", [("train_videos", 3), ("val_videos", 0), ("size", 15),
                                          ("min_seconds", 0.0)])
def test_invalid_settings_say_what_is_expected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ActionVideoSettings(**{field: value})


def test_lengths_without_a_mirror_symmetric_choice_are_refused() -> None:
    narrow = ActionVideoSettings(min_seconds=2.0, max_seconds=2.1, mirror_clip_len=16)
    with pytest.raises(ValueError, match="mirror-symmetric"):
        for pair in range(20):
            action_video(pair, narrow, seed=0)


def test_pretraining_labels_name_shape_colour_and_place() -> None:
    """position_grid only refines the label: the same images, shape x colour recovered by integer division, and
    every cell of the grid used."""
    from adaptkit.data import shape_images

    plain_images, plain_labels = shape_images(np.random.default_rng(3), 400, 24)
    images, labels = shape_images(np.random.default_rng(3), 400, 24, position_grid=3)
    assert np.array_equal(images, plain_images)
    assert np.array_equal(labels // 9, plain_labels) and set(np.unique(labels % 9)) == set(range(9))
    with pytest.raises(ValueError, match="position_grid"):
        shape_images(np.random.default_rng(0), 1, 24, position_grid=0)


def test_generation_in_worker_processes_writes_the_same_files(tmp_path) -> None:
    serial = generate_action_dataset(TINY, tmp_path / "serial")
    parallel = generate_action_dataset(TINY, tmp_path / "parallel", workers=2)
    assert serial.train_list.read_text() == parallel.train_list.read_text()
    files = sorted(p.relative_to(serial.root) for p in serial.root.rglob("*.mp4"))
    assert len(files) == TINY.train_videos + TINY.val_videos
    assert all((serial.root / f).read_bytes() == (parallel.root / f).read_bytes() for f in files)
