"""The checks layers make on their inputs: frame-folded tokens (B*T, ...) that regroup into clips (B, T, ...), sizes,
and the packed q/k/v and bias that attention over frames reads (both of its paths refuse and broadcast alike)."""

from __future__ import annotations

import torch


def check_frame_folded(rows: int, num_frames: int) -> None:
    """Refuse a frame count that does not split ``rows`` frame-folded rows into whole clips.

    Args:
        rows: Leading dimension B*T of the frame-folded tensor.
        num_frames: T, the clip length the caller regroups by.

    Raises:
        ValueError: if ``num_frames`` < 1, or ``rows`` is not a multiple of it.
    """
    # Plain comparisons only: under torch.compile both may be symbolic ints, which an isinstance check would refuse.
    if num_frames < 1:
        raise ValueError(f"num_frames must be a positive number of frames, got {num_frames!r}")
    if rows % num_frames:
        raise ValueError(f"{rows} frame-folded rows are not a whole number of {num_frames}-frame clips")


def check_positive(name: str, value: float) -> None:
    """Refuse a size or ratio that is not > 0.

    Raises:
        ValueError: if ``value`` is not > 0 (NaN and bools included); the message names ``name``.
    """
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_packed_qkv(packed: torch.Tensor, dtypes: tuple[torch.dtype, ...] | None = None) -> None:
    """Refuse packed q/k/v that is not (B, T, N, 3, heads, d) in a float type.

    Args:
        packed: q/k/v of every frame, (B, T, N, 3, heads, d).
        dtypes: The float types accepted (None: any floating-point type).

    Raises:
        ValueError: if ``packed`` is not 6-D with dim 3 of size 3, or not of an accepted type.
    """
    if packed.dim() != 6 or packed.shape[3] != 3:
        raise ValueError(f"packed q/k/v must be (B, T, N, 3, heads, d), got shape {tuple(packed.shape)}")
    if not packed.is_floating_point() or (dtypes is not None and packed.dtype not in dtypes):
        expected = "a floating-point type" if dtypes is None else " or ".join(str(t) for t in dtypes)
        raise ValueError(f"packed q/k/v must be {expected}, got {packed.dtype}")


def frame_bias(bias: torch.Tensor | None, heads: int, num_frames: int, device: torch.device) -> torch.Tensor | None:
    """An attention bias over frames as (heads, T, T), for q/k/v with ``heads`` heads on ``device``.

    A bias that broadcasts to (heads, T, T), e.g. (1, T, T) or (T, T), comes back expanded to it
    (a view with stride 0 where it broadcasts; its gradient sums back).

    Raises:
        ValueError: if ``bias`` is not a float tensor on ``device`` that broadcasts to (heads, T, T); the message
            names that shape.
    """
    if bias is None:
        return None
    expected = (heads, num_frames, num_frames)
    shape = tuple(bias.shape)
    broadcasts = len(shape) <= 3 and all(s == 1 or s == e for s, e in zip(reversed(shape), reversed(expected)))
    if not broadcasts or not bias.is_floating_point() or bias.device != device:
        raise ValueError(f"the bias over frames must be a float tensor on {device} of shape (heads, T, T) = "
                         f"{expected}, or one that broadcasts to it; got {bias.dtype} {shape} on {bias.device}")
    return bias.expand(expected)
