"""DataLoader worker processes that stop when the loop reading them ends, however it ends.

PyTorch stops a loader's workers when its iterator is garbage collected. An error's traceback holds the iterator (the
frames that read it), and PyTorch re-raises a worker's error from a frame that also holds the error: a reference cycle,
freed only by the cyclic collector, which may not run before the interpreter exits. At exit, multiprocessing sends the
workers SIGTERM and waits for them; the training workers ignore SIGTERM (``recipes._interrupt.ignore_stop_signals``),
so the process hung after printing its error. :func:`stopping_workers` stops them when the loop ends instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


def stop_workers(batches: DataLoader | Iterator[Any]) -> None:
    """Stop the worker processes of a DataLoader iterator now (nothing for a loader without workers).

    ``batches`` is the iterator, or a loader with ``persistent_workers``, which keeps its iterator; that loader then
    starts new workers if it is iterated again. PyTorch has no public way to do this: ``_shutdown_workers`` is what
    its iterator's ``__del__`` calls (it sends each worker its stop message, and terminates one that does not stop).
    """
    if isinstance(batches, DataLoader):
        iterator, batches._iterator = batches._iterator, None
    else:
        iterator = batches
    shutdown = getattr(iterator, "_shutdown_workers", None)  # None: no workers (or a PyTorch without it)
    if shutdown is not None:
        shutdown()


@contextlib.contextmanager
def stopping_workers(batches: DataLoader | Iterator[Any]) -> Iterator[None]:
    """Context manager: :func:`stop_workers` on exit, whether the loop finished or raised."""
    try:
        yield
    finally:
        stop_workers(batches)
