"""Worker-side clip transforms on uint8 (T, C, H, W) videos, plus the augmentation config and its paper presets.

The transforms wrap the clip as a ``tv_tensors.Video`` so torchvision.transforms.v2 draws every random parameter
ONCE per clip: all frames get the same crop, flip, RandAugment ops and colour jitter. Random erasing, MixUp/CutMix
and normalisation run on the accelerator (see :mod:`adaptkit.data.batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["AugmentConfig", "VideoTestTransform", "VideoTrainTransform", "three_crop"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation choices for one training setting. Presets: :meth:`kinetics`, :meth:`ssv2`, :meth:`diving48`.

    The presets follow AIM App. A.1-A.3 (which follow Video Swin's recipes, Liu et al. 2022) and the
    authors' configs. Sizes are in pixels.

    Raises:
        ValueError: on construction, if a size is < 1, ``scale`` is not 0 < min <= max <= 1, ``ratio`` is
            not 0 < min <= max, ``test_crops`` is not 1 or 3, ``test_resize_size`` < ``crop_size``,
            ``random_erasing_p`` is outside [0, 1], ``label_smoothing`` outside [0, 1), an alpha or
            ``color_jitter`` is negative, ``randaugment_num_ops`` < 1 or ``randaugment_magnitude`` outside [0, 31).
    """

    crop_size: int = 224  # model input side, train and test
    resize_size: int = 256  # train: short side before RandomResizedCrop
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio range
    hflip: bool = True  # horizontal flip; off for direction-sensitive classes (SSv2)
    randaugment: bool = False  # RandAugment with the same ops for all frames
    randaugment_num_ops: int = 4
    randaugment_magnitude: int = 7
    color_jitter: float = 0.0  # strength s: brightness = contrast = saturation = s, hue = s / 4; 0 turns it off
    random_erasing_p: float = 0.0  # device side, after normalisation; one box for all frames of a clip
    mixup_alpha: float = 0.0  # device side; 0 turns it off
    cutmix_alpha: float = 0.0  # device side; 0 turns it off
    label_smoothing: float = 0.0  # applied to the (mixed) soft targets
    test_crops: int = 1  # 1 = centre crop, 3 = ThreeCrop along the long side
    test_resize_size: int | None = None  # test: short side before cropping; None = crop_size

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.resize_size < 1:
            raise ValueError(f"crop_size and resize_size must be >= 1, got {self.crop_size}, {self.resize_size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"test_crops must be 1 or 3, got {self.test_crops}")
        if self.test_resize_size is not None and self.test_resize_size < self.crop_size:
            raise ValueError(f"test_resize_size {self.test_resize_size} is smaller than crop_size {self.crop_size}")
        if not 0 <= self.random_erasing_p <= 1:
            raise ValueError(f"random_erasing_p must be in [0, 1], got {self.random_erasing_p}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or self.color_jitter < 0:
            raise ValueError("mixup_alpha, cutmix_alpha and color_jitter must be >= 0")
        if self.randaugment_num_ops < 1 or not 0 <= self.randaugment_magnitude < 31:
            raise ValueError("randaugment_num_ops must be >= 1 and randaugment_magnitude in [0, 31)")

    @classmethod
    def kinetics(cls, **overrides: Any) -> AugmentConfig:
        """K400/K700: flip, no RandAugment, no erasing, no mixup; test centre crop (Tx3x1 with 3 temporal clips).

        The ViT-L recipe adds colour jitter: ``AugmentConfig.kinetics(color_jitter=0.4)``.
        """
        return cls(**overrides)

    @classmethod
    def ssv2(cls, **overrides: Any) -> AugmentConfig:
        """Something-Something-v2: NO flip, RandAugment(4, 7), erasing p=0.25, label smoothing 0.1, 3 test crops."""
        settings = dict(hflip=False, randaugment=True, random_erasing_p=0.25, label_smoothing=0.1, test_crops=3)
        return cls(**{**settings, **overrides})

    @classmethod
    def diving48(cls, **overrides: Any) -> AugmentConfig:
        """Diving-48: flip, no extras; 1 test crop as in the reference README (its config uses 3: ``test_crops=3``)."""
        return cls(**overrides)


def _as_video(clip: torch.Tensor) -> tv_tensors.Video:
    if clip.ndim != 4 or clip.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 clip (T, C, H, W), got {clip.dtype} {tuple(clip.shape)}")
    return tv_tensors.Video(clip)


class VideoTrainTransform:
    """Short side resize -> RandomResizedCrop -> [flip] -> [RandAugment] -> [ColorJitter], one draw per clip.

    Input and output are uint8 (T, C, H, W); the output is (T, C, crop_size, crop_size).

    Args:
        config: The augmentation choices (crop, resize, flip, RandAugment, colour jitter are used here).

    Example:
        >>> transform = VideoTrainTransform(AugmentConfig.ssv2(crop_size=32, resize_size=40))
        >>> transform(torch.zeros(8, 3, 48, 64, dtype=torch.uint8)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        steps: list[v2.Transform] = [
            v2.Resize(config.resize_size, antialias=True),
            v2.RandomResizedCrop(config.crop_size, scale=config.scale, ratio=config.ratio, antialias=True),
        ]
        if config.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if config.randaugment:
            steps.append(v2.RandAugment(config.randaugment_num_ops, config.randaugment_magnitude))
        if config.color_jitter > 0:
            s = config.color_jitter
            steps.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(s / 4, 0.5)))
        self.pipeline = v2.Compose(steps)

    @property
    def short_side(self) -> int:
        """The short side the first step resizes to: a decoder may deliver frames at this size already (the resize
        then does nothing and the random crop is drawn on the same geometry)."""
        return self.config.resize_size

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (T, C, H, W) -> uint8 (T, C, crop_size, crop_size), one random draw for all T frames.

        Raises:
            ValueError: if ``clip`` is not a 4-D uint8 tensor.
        """
        return self.pipeline(_as_video(clip)).as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def three_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """Three ``size`` x ``size`` crops at the start, centre and end of the long side (centred on the short side).

    ThreeCrop is not in torchvision. Resize the short side to ``size`` first to cover the whole frame.

    Args:
        video: (..., H, W) with H, W >= size, any dtype.
        size: crop side in pixels.

    Returns:
        (3, ..., size, size): start, centre, end (views of ``video`` stacked into a new tensor).

    Raises:
        ValueError: if H or W is smaller than ``size``.
    """
    height, width = video.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"frames of {height}x{width} are smaller than the crop size {size}")
    top, left = (height - size) // 2, (width - size) // 2
    if width >= height:
        corners = [(top, 0), (top, left), (top, width - size)]
    else:
        corners = [(0, left), (top, left), (height - size, left)]
    return torch.stack([video[..., y : y + size, x : x + size] for y, x in corners])


class VideoTestTransform:
    """Short side resize -> centre crop (``num_crops=1``) or ThreeCrop (``num_crops=3``).

    Input uint8 (T, C, H, W); output uint8 (num_crops, T, C, crop_size, crop_size), the spatial views.

    Args:
        crop_size: Crop side in pixels.
        num_crops: Spatial views: 1 (centre crop) or 3 (start, centre and end of the long side).
        resize_size: Short side in pixels before cropping; None = ``crop_size``.

    Raises:
        ValueError: if ``num_crops`` is not 1 or 3, or ``resize_size`` < ``crop_size``.
    """

    def __init__(self, crop_size: int = 224, num_crops: int = 1, resize_size: int | None = None) -> None:
        if num_crops not in (1, 3):
            raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
        resize_size = crop_size if resize_size is None else resize_size
        if resize_size < crop_size:
            raise ValueError(f"resize_size {resize_size} is smaller than crop_size {crop_size}")
        self.crop_size, self.num_crops, self.resize_size = crop_size, num_crops, resize_size

    @property
    def short_side(self) -> int:
        """The short side frames are resized to before cropping (a decoder may deliver them so)."""
        return self.resize_size

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """uint8 (T, C, H, W) -> uint8 (num_crops, T, C, crop_size, crop_size), contiguous.

        Raises:
            ValueError: if ``clip`` is not a 4-D uint8 tensor.
        """
        video = F.resize(_as_video(clip), [self.resize_size], antialias=True).as_subclass(torch.Tensor)
        if self.num_crops == 3:
            return three_crop(video, self.crop_size).contiguous()  # (3, T, C, S, S)
        return F.center_crop(video, [self.crop_size]).unsqueeze(0).contiguous()  # (1, T, C, S, S)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(crop_size={self.crop_size}, num_crops={self.num_crops}, resize_size={self.resize_size})"
