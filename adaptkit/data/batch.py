"""Device-side batch preparation: uint8 -> normalised float in the model layout, random erasing, MixUp/CutMix.

DataLoader workers return uint8 (B, T, C, H, W); converting, normalising and mixing on the accelerator is faster
and moves 4x fewer bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["BatchMixer", "VideoNormalize", "prepare_batch", "soft_targets"]


def _check_batch(batch: torch.Tensor) -> None:
    if batch.ndim != 5:
        raise ValueError(f"expected a batch (B, T, C, H, W), got shape {tuple(batch.shape)}")


def _random_erase(clips: torch.Tensor, p: float) -> torch.Tensor:
    """Erase one random box per clip, the same box in every frame (v2 on a Video draws once per call)."""
    eraser = v2.RandomErasing(p=p, value=0.0)  # 0 after normalisation = the mean colour
    return torch.stack([eraser(tv_tensors.Video(clip)).as_subclass(torch.Tensor) for clip in clips])


def prepare_batch(
    batch: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    random_erasing_p: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn a uint8 (B, T, C, H, W) batch into the model input (B, C, T, H, W), normalised.

    Args:
        batch: uint8 clips as the DataLoader returns them, on any device.
        mean: per-channel mean on the 0-1 scale (the backbone's, e.g. CLIP's).
        std: per-channel std on the 0-1 scale.
        random_erasing_p: probability to erase one box per clip (same box in all frames); use only for training.
        dtype: output dtype.

    Returns:
        (B, C, T, H, W) tensor of ``dtype`` on the batch's device, ``(x / 255 - mean) / std``.

    Raises:
        ValueError: if ``batch`` is not 5-D or not uint8.

    Example:
        >>> x = prepare_batch(torch.zeros(2, 8, 3, 32, 32, dtype=torch.uint8), [0.5] * 3, [0.25] * 3)
        >>> x.shape, float(x[0, 0, 0, 0, 0])
        (torch.Size([2, 3, 8, 32, 32]), -2.0)
    """
    _check_batch(batch)
    if batch.dtype != torch.uint8:  # also keeps the in-place ops below off the caller's tensor
        raise ValueError(f"expected a uint8 batch, got {batch.dtype}")
    mean_t = torch.as_tensor(mean, dtype=dtype, device=batch.device).view(1, 1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=dtype, device=batch.device).view(1, 1, -1, 1, 1)
    clips = batch.to(dtype).div_(255).sub_(mean_t).div_(std_t)  # (B, T, C, H, W)
    if random_erasing_p > 0:
        clips = _random_erase(clips, random_erasing_p)
    return clips.permute(0, 2, 1, 3, 4).contiguous()  # (B, C, T, H, W)


class VideoNormalize(nn.Module):
    """Module form of :func:`prepare_batch`; random erasing only in training mode.

    Args:
        mean: Per-channel mean on the 0-1 scale.
        std: Per-channel std on the 0-1 scale.
        random_erasing_p: Probability to erase one box per clip in training mode (AIM App. A.2 uses
            random erasing for SSv2).

    Raises:
        ValueError: if ``random_erasing_p`` is outside [0, 1].

    Example:
        >>> prep = VideoNormalize([0.5] * 3, [0.25] * 3, random_erasing_p=0.25).eval()
        >>> prep(torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8)).shape
        torch.Size([1, 3, 4, 16, 16])
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], random_erasing_p: float = 0.0) -> None:
        super().__init__()
        if not 0 <= random_erasing_p <= 1:
            raise ValueError(f"random_erasing_p must be in [0, 1], got {random_erasing_p}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)
        self.random_erasing_p = random_erasing_p

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, C, H, W) -> float32 (B, C, T, H, W), normalised, on the batch's device.

        Raises:
            ValueError: if ``batch`` is not 5-D or not uint8.
        """
        p = self.random_erasing_p if self.training else 0.0
        return prepare_batch(batch, self.mean, self.std, random_erasing_p=p)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot (B, num_classes) float targets with label smoothing ``y * (1 - eps) + eps / K``."""
    targets = nn.functional.one_hot(labels.long(), num_classes).float()
    return targets * (1 - smoothing) + smoothing / num_classes


class BatchMixer:
    """MixUp / CutMix (torchvision v2) on a video batch, with label smoothing on the mixed soft targets.

    Pairs and boxes are drawn once per batch; CutMix cuts a box on H, W (the last two dims) through every frame and
    channel, and its label weight is the exact pasted area. With both alphas 0 only the smoothing applies. When
    both are on, one of the two is picked per batch with equal chance. Use the targets with
    ``torch.nn.functional.cross_entropy(logits, targets)``, which accepts class probabilities.

    Args:
        num_classes: number of classes.
        mixup_alpha: Beta(alpha, alpha) for MixUp; 0 = off.
        cutmix_alpha: Beta(alpha, alpha) for CutMix; 0 = off.
        label_smoothing: smoothing applied after mixing (smoothing is affine, so the order does not matter).

    Call with ``clips`` float (B, T, C, H, W) (any batch-first layout with H, W last also works, e.g. the model's
    (B, C, T, H, W)) and ``labels`` int (B,); returns the mixed clips (same layout) and (B, num_classes) targets.

    Raises:
        ValueError: if ``num_classes`` < 1, an alpha is negative or ``label_smoothing`` is outside [0, 1).
    """

    def __init__(
        self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, label_smoothing: float = 0.0
    ) -> None:
        if num_classes < 1 or mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= label_smoothing < 1:
            raise ValueError("need num_classes >= 1, alphas >= 0 and 0 <= label_smoothing < 1")
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        mixers: list[v2.Transform] = []
        if mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(mixers) if len(mixers) > 1 else (mixers[0] if mixers else None)

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips (B, T, C, H, W), labels (B,)) -> (mixed clips, same shape and dtype; float (B, num_classes) targets).

        Raises:
            ValueError: if ``clips`` is not 5-D, or is not floating point while MixUp or CutMix is on.
        """
        _check_batch(clips)
        if self.mix is None:
            return clips, soft_targets(labels, self.num_classes, self.label_smoothing).to(clips.device)
        if not clips.is_floating_point():
            raise ValueError("MixUp/CutMix need float clips: mix after prepare_batch")
        # A 5-D Video tells v2 the batch is dim 0 and the image is the last two dims.
        mixed, targets = self.mix(tv_tensors.Video(clips), labels.long())
        targets = targets * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return mixed.as_subclass(torch.Tensor), targets
