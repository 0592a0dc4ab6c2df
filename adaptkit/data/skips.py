"""Which videos a dataset had to skip, visible to the main process even when DataLoader workers did the skipping.

A dataset object is copied into every worker process, so a Python list filled in a worker never reaches the training
loop. The flags live in a shared-memory tensor instead (one int8 per record): workers write, the main process reads.
This works with the fork, spawn and forkserver start methods (torch shares the storage, it does not copy it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .probe import DECODE_ERROR_KINDS, VideoDecodeError

__all__ = ["SkipTracker"]

logger = logging.getLogger(__name__)

_KINDS = list(DECODE_ERROR_KINDS)  # flag value = 1 + position here; 0 = not skipped


class SkipTracker:
    """Shared per-record skip flags plus the paths they refer to."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.codes = torch.zeros(len(self.paths), dtype=torch.int8).share_memory_()

    def is_skipped(self, index: int) -> bool:
        return bool(self.codes[index] != 0)

    def mark(self, index: int, error: VideoDecodeError) -> None:
        """Flag record ``index`` with the error's kind (as its raiser judged it: a frame cache by what it recorded,
        not by whether the file exists now) and log the path and the detailed reason."""
        self.codes[index] = 1 + _KINDS.index(error.kind)
        # A window past the video's end: the file itself reads fine.
        state = {"missing": "missing video", "window": "video"}.get(error.kind, "unreadable video")
        logger.warning("skipping %s %s: %s", state, self.paths[index], error.reason)

    def mark_missing(self, indices: Sequence[int]) -> None:
        """Flag the records at ``indices`` as missing files without a log line each (the caller logs one summary:
        a class absent on disk is hundreds of rows)."""
        self.codes[list(indices)] = 1 + _KINDS.index("missing")

    def unflagged(self) -> torch.Tensor:
        """int64 (N,) indices of the records not flagged (yet), in record order."""
        return torch.nonzero(self.codes == 0, as_tuple=True)[0]

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of every skipped record, in record order; the reasons are the values of
        :data:`~adaptkit.data.probe.DECODE_ERROR_KINDS` (``"missing"``, ``"corrupt or truncated"``, ...)."""
        flagged = torch.nonzero(self.codes, as_tuple=True)[0].tolist()
        return [(self.paths[i], DECODE_ERROR_KINDS[_KINDS[int(self.codes[i]) - 1]]) for i in flagged]

    def brief(self, examples: int = 3) -> str:
        """One line: the count per reason and the first ``examples`` skipped paths (an error message's tail; a
        dataset of thousands of broken files must not make a line of thousands of paths)."""
        skipped = self.skipped()
        counts: dict[str, int] = {}
        for _, reason in skipped:
            counts[reason] = counts.get(reason, 0) + 1
        shown = ", ".join(path for path, _ in skipped[:examples])
        more = f" and {len(skipped) - examples} more" if len(skipped) > examples else ""
        return f"{', '.join(f'{n} {reason}' for reason, n in counts.items())}: {shown}{more}"

    def summary(self) -> str:
        """One line per skipped video after a header line; ``"no videos skipped"`` when all decoded."""
        skipped = self.skipped()
        if not skipped:
            return "no videos skipped"
        lines = [f"skipped {len(skipped)} of {len(self.paths)} videos:"]
        lines += [f"  {path} ({reason})" for path, reason in skipped]
        return "\n".join(lines)
