"""Stop a training run cleanly on SIGTERM (a cluster preempting the job, torchrun passing it on) or SIGINT (Ctrl-C).

While :class:`StopSignals` is active, the first signal only sets a flag; the training loop reads it at the next step
boundary, where every rank agrees (:func:`recipes._distributed.any_rank`), writes a checkpoint together and stops with
:class:`TrainingInterrupted`. A second signal more than a second later stops at once, as Ctrl-C did before (the
copy torchrun forwards of the signal a terminal sent the whole process group is the same request, not a second one).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Self

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_WINDOW_S = 1.0  # a signal this soon after the first is the same request (torchrun forwards the terminal's)


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped at ``step`` on a signal, after writing a checkpoint there; the exit status is 128 + signal."""

    def __init__(self, step: int, signum: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint written; continue with --resume")
        self.step, self.signum = step, signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StoppedAtOnce(KeyboardInterrupt):
    """A second stop signal: the run stops where it is, without a checkpoint; the exit status is 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name} again: stopped at once, without a checkpoint")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _SignalHandlers:
    """Context manager installing ``self._handle`` for SIGTERM and SIGINT in the main thread (elsewhere nothing
    changes), and putting the previous handlers back on exit."""

    _previous: dict[int, Any]
    _handle: Callable[[int, FrameType | None], None]  # what a signal does: each subclass's own

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class FinalEvaluationInterrupted(KeyboardInterrupt):
    """A stop signal during the final evaluation: ``final/`` is already written, so the run stops at once (nothing is
    lost: the evaluation only reads it); the exit status is 128 + signal."""

    def __init__(self, step: int, signum: int, final: str) -> None:
        super().__init__(f"{signal.Signals(signum).name} during the final evaluation at step {step}: stopped; the "
                         f"final model {final} is written: continue with --resume to evaluate it (or adaptkit "
                         f"evaluate --checkpoint {final})")
        self.step, self.signum = step, signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopAtOnce(_SignalHandlers):
    """Context manager: SIGTERM or SIGINT raises :class:`FinalEvaluationInterrupted` at once, in the main thread
    (elsewhere nothing changes). For work after the last checkpoint, where waiting for a step boundary saves nothing.
    """

    def __init__(self, step: int, final: str) -> None:
        self.step, self.final = step, final
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        raise FinalEvaluationInterrupted(self.step, signum, self.final)



def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM and SIGINT, so a signal sent to every process of the job
    (SLURM's scancel, a terminal's Ctrl-C) reaches the main process alone and the run can checkpoint before it stops;
    the workers end with their DataLoader."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopSignals(_SignalHandlers):
    """Context manager catching SIGTERM and SIGINT in the main thread (elsewhere, and outside it, nothing changes).

    Args:
        announce: print one line on stderr when the first signal arrives (the main rank).
    """

    def __init__(self, announce: bool) -> None:
        self.announce = announce
        self.signum: int | None = None
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._at = signum, now
            if self.announce:  # os.write: print() into a stderr write the signal interrupted raises "reentrant call"
                os.write(2, f"{signal.Signals(signum).name}: stopping after this step to write a checkpoint (send it "
                            "again to stop at once)\n".encode())
        elif now - self._at > REPEAT_WINDOW_S:
            raise StoppedAtOnce(signum)

