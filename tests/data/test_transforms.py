"""Worker-side transforms draw their random parameters once per clip; ThreeCrop positions; config presets."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from adaptkit.data import AugmentConfig, VideoTestTransform, VideoTrainTransform, three_crop

SMALL = dict(crop_size=32, resize_size=40)


def still_clip(seed: int, frames: int = 6, height: int = 48, width: int = 64) -> torch.Tensor:
    """A clip whose frames are all the same random image."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (1, 3, height, width), generator=generator, dtype=torch.uint8)
    return image.expand(frames, -1, -1, -1).contiguous()


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig.kinetics(**SMALL),
        AugmentConfig.kinetics(color_jitter=0.4, **SMALL),
        AugmentConfig.ssv2(**SMALL),
        AugmentConfig(randaugment=True, color_jitter=0.4, hflip=True, **SMALL),
    ],
    ids=["kinetics", "kinetics_jitter", "ssv2", "everything"],
)
def test_identical_frames_stay_identical(config):
    transform = VideoTrainTransform(config)
    for seed in range(12):
        torch.manual_seed(seed)
        out = transform(still_clip(seed))
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.uint8
        assert (out == out[:1]).all(), "a random parameter was drawn per frame"
    draws = []
    for seed in range(2):
        torch.manual_seed(seed)
        draws.append(transform(still_clip(0)))
    assert not torch.equal(*draws), "the transform should be random"


def test_flip_is_drawn_once_per_clip():
    # A full-frame crop so the only randomness is the flip: every frame is either flipped or not, together.
    config = AugmentConfig(crop_size=32, resize_size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    transform = VideoTrainTransform(config)
    clip = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)  # different frames
    decisions = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(clip)
        flipped = [torch.equal(out[t], clip[t].flip(-1)) for t in range(5)]
        kept = [torch.equal(out[t], clip[t]) for t in range(5)]
        assert all(flipped) or all(kept)
        decisions.add(all(flipped))
    assert decisions == {True, False}


def test_ssv2_has_no_flip_and_kinetics_has_one():
    def steps(config):
        return [type(step) for step in VideoTrainTransform(config).pipeline.transforms]

    assert v2.RandomHorizontalFlip not in steps(AugmentConfig.ssv2())
    assert v2.RandAugment in steps(AugmentConfig.ssv2())
    assert v2.RandomHorizontalFlip in steps(AugmentConfig.kinetics())
    assert steps(AugmentConfig.kinetics())[:2] == [v2.Resize, v2.RandomResizedCrop]


def test_presets_match_the_paper_settings():
    ssv2 = AugmentConfig.ssv2()
    assert (ssv2.hflip, ssv2.randaugment, ssv2.randaugment_num_ops, ssv2.randaugment_magnitude) == (False, True, 4, 7)
    assert (ssv2.random_erasing_p, ssv2.label_smoothing, ssv2.test_crops) == (0.25, 0.1, 3)
    for preset in (AugmentConfig.kinetics(), AugmentConfig.diving48()):
        assert preset.hflip and not preset.randaugment and preset.random_erasing_p == 0 and preset.test_crops == 1
        assert (preset.crop_size, preset.resize_size, preset.scale) == (224, 256, (0.08, 1.0))
    assert AugmentConfig.diving48(test_crops=3).test_crops == 3


@pytest.mark.parametrize(
    "changes",
    [dict(test_crops=2), dict(scale=(0.5, 0.1)), dict(random_erasing_p=1.5), dict(label_smoothing=1.0),
     dict(mixup_alpha=-1.0), dict(crop_size=0), dict(test_resize_size=100)],
)
def test_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        AugmentConfig(**changes)


def test_train_transform_rejects_non_uint8_clips():
    with pytest.raises(ValueError, match="uint8"):
        VideoTrainTransform(AugmentConfig(**SMALL))(torch.zeros(4, 3, 48, 64))


def x_ramp(height: int, width: int) -> torch.Tensor:
    """(2, 3, H, W) uint8 whose value is the column index (and row index in channel 1)."""
    columns = torch.arange(width).view(1, 1, width).expand(3, height, width).clone()
    columns[1] = torch.arange(height).view(height, 1).expand(height, width)
    return columns.to(torch.uint8).unsqueeze(0).expand(2, -1, -1, -1)


def test_three_crop_positions_landscape():
    crops = three_crop(x_ramp(32, 48), 32)  # long side 48: crops start at x = 0, 8, 16
    assert crops.shape == (3, 2, 3, 32, 32)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 8, 16]
    assert [int(c[0, 0, 0, -1]) for c in crops] == [31, 39, 47]


def test_three_crop_positions_portrait():
    crops = three_crop(x_ramp(50, 32), 32)  # long side 50: crops start at y = 0, 9, 18
    assert [int(c[0, 1, 0, 0]) for c in crops] == [0, 9, 18]
    assert [int(c[0, 1, -1, 0]) for c in crops] == [31, 40, 49]


def test_three_crop_needs_frames_at_least_the_crop_size():
    with pytest.raises(ValueError, match="smaller than the crop size"):
        three_crop(x_ramp(20, 48), 32)


def test_test_transform_resizes_the_short_side_then_crops():
    clip = still_clip(0, frames=4, height=64, width=96)
    centre = VideoTestTransform(32)(clip)
    assert centre.shape == (1, 4, 3, 32, 32) and centre.dtype == torch.uint8
    three = VideoTestTransform(32, num_crops=3)(clip)  # resized to 32x48: three crops along the width
    assert three.shape == (3, 4, 3, 32, 32)
    assert torch.equal(three[1], centre[0])  # the middle crop is the centre crop
    assert VideoTestTransform(32, resize_size=40)(clip).shape == (1, 4, 3, 32, 32)
    with pytest.raises(ValueError):
        VideoTestTransform(32, num_crops=5)
