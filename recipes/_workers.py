"""DataLoader worker processes: they stop when the loop reading them ends, however it ends; their errors read as
the error the worker raised.

PyTorch stops a loader's workers when its iterator is garbage collected. An error's traceback holds the iterator (the
frames that read it), and PyTorch re-raises a worker's error from a frame that also holds the error: a reference cycle,
freed only by the cyclic collector, which may not run before the interpreter exits. At exit, multiprocessing sends the
workers SIGTERM and waits for them; the training workers ignore SIGTERM (``recipes._interrupt.ignore_stop_signals``),
so the process hung after printing its error. :func:`stopping_workers` stops them when the loop ends instead.

A worker's error reaches the main process as "Caught X in DataLoader worker process N." followed by the worker's whole
traceback; :func:`worker_error` takes the original type and message back out of it (what the CLI's one line shows).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

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


# torch.utils.data re-raises with "Caught {type} {where}.\nOriginal " + the formatted traceback (torch._utils).
_RERAISED = re.compile(r"Caught (?P<name>\w+) (?P<where>in .+?)\.\nOriginal ")
_TRACEBACK = "Traceback (most recent call last):\n"


class WorkerError(NamedTuple):
    """An error raised in a DataLoader worker, as its traceback names it."""

    kind: str  # the type: "RuntimeError", or with its module, "adaptkit.data.probe.VideoDecodeError"
    message: str  # the original message, without the traceback
    where: str  # "in DataLoader worker process 0" (or "in pin memory thread for device 0")


def worker_error(error: BaseException) -> WorkerError | None:
    """The original type and message of an error PyTorch re-raised from a DataLoader worker (or its pin-memory
    thread); None for any other error, or one whose traceback text does not read as expected."""
    text = str(error)
    match = _RERAISED.match(text)
    if match is None or _TRACEBACK not in text:
        return None
    # The last traceback is the raised error's (earlier ones are its chained causes); its frames are indented.
    lines = text.rsplit(_TRACEBACK, 1)[1].splitlines()
    first = next((index for index, line in enumerate(lines) if not line.startswith(" ")), None)
    if first is None:
        return None
    kind, _, message = "\n".join(lines[first:]).partition(": ")
    if kind.rsplit(".", 1)[-1] != match["name"]:
        return None
    return WorkerError(kind, message.strip(), match["where"])
