"""Device-side preparation: layout and normalisation, random erasing per clip, MixUp/CutMix on H, W only."""

from __future__ import annotations

import pytest
import torch

from adaptkit.data import BatchMixer, VideoNormalize, prepare_batch, soft_targets

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_prepare_batch_layout_and_values():
    batch = torch.randint(0, 256, (2, 4, 3, 8, 10), dtype=torch.uint8)
    out = prepare_batch(batch, MEAN, STD)
    assert out.shape == (2, 3, 4, 8, 10) and out.dtype == torch.float32 and out.is_contiguous()
    for b, t, c, h, w in [(0, 0, 0, 0, 0), (1, 3, 2, 7, 9), (1, 2, 1, 4, 5)]:
        expected = (batch[b, t, c, h, w].item() / 255 - MEAN[c]) / STD[c]
        assert out[b, c, t, h, w].item() == pytest.approx(expected, abs=1e-5)
    assert prepare_batch(batch, MEAN, STD, dtype=torch.float64).dtype == torch.float64


def test_prepare_batch_rejects_other_ranks_and_dtypes():
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        prepare_batch(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        prepare_batch(torch.zeros(1, 4, 3, 8, 8), MEAN, STD)


def test_random_erasing_uses_one_box_for_all_frames_and_a_box_per_clip():
    torch.manual_seed(0)
    batch = torch.full((6, 5, 3, 24, 24), 255, dtype=torch.uint8)  # normalised value far from 0
    out = prepare_batch(batch, MEAN, STD, random_erasing_p=1.0)  # (B, C, T, H, W)
    erased = out == 0
    boxes = []
    for clip in erased:
        mask = clip[0, 0]
        assert mask.any(), "p=1 must erase"
        assert (clip == mask).all(), "the same box in every frame and channel"
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        assert mask.sum() == len(rows) * len(cols)  # a rectangle
        boxes.append((rows[0].item(), cols[0].item(), len(rows), len(cols)))
    assert len(set(boxes)) > 1, "each clip draws its own box"


def test_video_normalize_erases_only_in_training_mode():
    batch = torch.full((2, 3, 3, 16, 16), 255, dtype=torch.uint8)
    prep = VideoNormalize(MEAN, STD, random_erasing_p=1.0)
    assert (prep.train()(batch) == 0).any()
    evaluated = prep.eval()(batch)
    assert not (evaluated == 0).any()
    assert torch.allclose(evaluated, prepare_batch(batch, MEAN, STD))


def labelled_batch(batch_size: int = 6, frames: int = 4, height: int = 16, width: int = 24) -> torch.Tensor:
    """Clip b, frame t holds 100 * b + t everywhere: a pixel's source clip and frame can be read off its value.

    T (4) differs from H (16) and W (24), so cutting the wrong axes cannot go unnoticed.
    """
    values = 100 * torch.arange(batch_size).view(-1, 1) + torch.arange(frames).view(1, -1)
    return values.view(batch_size, frames, 1, 1, 1).expand(-1, -1, 3, height, width).float().contiguous()


def test_cutmix_cuts_height_and_width_never_time_and_labels_match_the_area():
    mixer = BatchMixer(num_classes=10, cutmix_alpha=1.0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    areas = set()
    for seed in range(10):
        torch.manual_seed(seed)
        clips = labelled_batch()
        mixed, targets = mixer(clips, labels)
        assert mixed.shape == clips.shape and targets.shape == (6, 10)
        pasted = mixed != clips  # (B, T, C, H, W)
        for b in range(6):
            mask = pasted[b, 0, 0]  # (H, W)
            assert (pasted[b] == mask).all(), "one box through every frame and channel"
            # Pasted pixels come from the previous clip (roll by one), SAME frame: time is untouched.
            source = (b - 1) % 6
            expected = 100 * source + torch.arange(4).view(4, 1, 1, 1).float()
            assert (mixed[b][pasted[b]] == expected.expand(4, 3, 16, 24)[pasted[b]]).all()
            area = mask.float().mean().item()
            assert targets[b, b].item() == pytest.approx(1 - area)
            assert targets[b, source].item() == pytest.approx(area)
            areas.add(round(area, 4))
        assert torch.allclose(targets.sum(1), torch.ones(6))
    assert len(areas) > 1


def test_cutmix_on_the_model_layout_also_cuts_height_and_width():
    torch.manual_seed(3)
    clips = labelled_batch().permute(0, 2, 1, 3, 4).contiguous()  # (B, C, T, H, W)
    mixed, targets = BatchMixer(num_classes=6, cutmix_alpha=1.0)(clips, torch.arange(6))
    pasted = mixed != clips
    for b in range(6):
        assert (pasted[b] == pasted[b, 0, 0]).all()
        assert targets[b, b].item() == pytest.approx(1 - pasted[b, 0, 0].float().mean().item())


def test_mixup_blends_whole_clips_with_the_label_weight():
    torch.manual_seed(0)
    clips = labelled_batch()
    mixed, targets = BatchMixer(num_classes=6, mixup_alpha=0.4)(clips, torch.arange(6))
    lam = targets[0, 0].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * clips + (1 - lam) * clips.roll(1, 0))
    assert torch.allclose(targets, lam * torch.eye(6) + (1 - lam) * torch.eye(6).roll(1, 0))


def test_label_smoothing_without_mixing():
    clips = labelled_batch()
    out, targets = BatchMixer(num_classes=5, label_smoothing=0.1)(clips, torch.tensor([0, 1, 2, 3, 4, 0]))
    assert out is clips
    assert targets[0].tolist() == pytest.approx([0.92, 0.02, 0.02, 0.02, 0.02])
    assert torch.allclose(targets, soft_targets(torch.tensor([0, 1, 2, 3, 4, 0]), 5, 0.1))


def test_label_smoothing_after_mixing_keeps_distributions():
    torch.manual_seed(1)
    mixer = BatchMixer(10, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    _, targets = mixer(labelled_batch(), torch.arange(6))
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert targets.min() >= 0.01 - 1e-6  # every class keeps at least eps / K


def test_mixer_argument_checks():
    with pytest.raises(ValueError):
        BatchMixer(0)
    with pytest.raises(ValueError):
        BatchMixer(10, label_smoothing=1.0)
    with pytest.raises(ValueError, match="float"):
        BatchMixer(10, cutmix_alpha=1.0)(torch.zeros(2, 4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
