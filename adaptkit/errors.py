"""The errors adaptkit raises on purpose, one class per kind of mistake, so callers can catch them apart.

Every class derives from :class:`AdaptkitError` and also from the builtin exceptions the same mistakes raised
before they were typed (``TypeError`` / ``ValueError`` / ...), so ``except ValueError`` keeps working.
Checkpoint errors (:class:`~adaptkit.ArchitectureMismatchError`, :class:`~adaptkit.CorruptCheckpointError`) live
in :mod:`adaptkit.checkpoint` and derive from :class:`AdaptkitError` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class AdaptkitError(Exception):
    """Base class of every error adaptkit raises on purpose."""


class UnsupportedBackboneError(AdaptkitError, TypeError, ValueError):
    """No registered family handles the image model, or the family or strategy refuses one of its features
    (another attention class, patch dropout, attentional pooling, stages for ``timesformer``, ...)."""


class StrategyOptionError(AdaptkitError, ValueError, TypeError):
    """An unknown strategy name, an unknown option, an option value out of range, or targets that match nothing."""


class VideoInputError(AdaptkitError, ValueError, TypeError):
    """A video that is not a non-empty float (B, C, T, H, W) tensor of the model's dtype, channels and frame size."""


class CheckpointMismatchError(AdaptkitError, KeyError, ValueError):
    """Saved tensors that do not match the model: missing or unexpected names, other shapes, non-float data."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnloadedModelError(AdaptkitError, RuntimeError):
    """A call on a video model after ``unload()`` gave its backbone back as the image model."""


class NoReadableVideoError(AdaptkitError, RuntimeError):
    """No readable video can be found: every training record is flagged (missing, corrupt, a frame window past its
    video), ``max_attempts`` draws in a row failed (the message counts the skips by reason, with a few paths), or
    every video of an evaluation was skipped (the message counts them)."""


class MergeError(AdaptkitError, RuntimeError, TypeError):
    """A refused merge: the strategy cannot be merged, the model is already merged or shares its
    backbone with other adapter sets, or merging changed the outputs beyond tolerance (the model is left unmerged)."""


@contextlib.contextmanager
def retyped(error_class: type[AdaptkitError]) -> Iterator[None]:
    """Raise a ``TypeError`` / ``ValueError`` from inside the block as ``error_class`` (same message, the original
    chained); an :class:`AdaptkitError` passes through as it is. For checks a user's own family or strategy writes
    with builtin exceptions."""
    try:
        yield
    except AdaptkitError:
        raise
    except (TypeError, ValueError) as error:
        raise error_class(str(error)) from error
