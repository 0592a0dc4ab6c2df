"""The one check every layer that regroups frame-folded tokens (B*T, ...) into clips (B, T, ...) makes first."""

from __future__ import annotations


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
