"""Metric logs of a run: ``metrics.jsonl`` (every record), ``<kind>.csv`` (one table per kind of record, e.g.
``train.csv`` and ``eval.csv``) and TensorBoard scalars when ``tensorboard`` is installed. Main process only."""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("recipes")


class _CurrentStderr(logging.StreamHandler):
    """A stream handler writing to ``sys.stderr`` as it is when a record is emitted, not when the handler was made:
    a command run in-process (tests, notebooks) must not leave logging bound to a stream that was since replaced."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def setup_logging(is_main: bool) -> None:
    """Plain ``logging`` to stderr: INFO on the main process, warnings only on the others (skipped videos etc.)."""
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING, handlers=[_CurrentStderr()],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True,
    )


def _truncate(path: Path, last_step: int, step_of: Callable[[str], int], header: bool = False) -> None:
    """Keep the lines of a log whose step is at most ``last_step`` (and the header line)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head, rows = (lines[:1], lines[1:]) if header else ([], lines)
    path.write_text("".join(head + [row for row in rows if row.strip() and step_of(row) <= last_step]),
                    encoding="utf-8")


class MetricLogger:
    """Append metric records to the run folder's logs.

    Args:
        run_dir: the run folder.
        enabled: False makes every call a no-op (non-main ranks).
        resume_step: continue the existing logs from this step: records logged after it (by a run killed before
            its next checkpoint) are dropped, since the resumed run logs those steps again. None starts afresh.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._csv: dict[str, tuple[Any, csv.DictWriter]] = {}
        self._tensorboard = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        jsonl = self.run_dir / "metrics.jsonl"
        if resume_step is None:
            jsonl.unlink(missing_ok=True)
            for old in self.run_dir.glob("*.csv"):
                old.unlink()
        else:
            _truncate(jsonl, resume_step, lambda line: json.loads(line)["step"])
            for table in self.run_dir.glob("*.csv"):
                _truncate(table, resume_step, lambda line: int(line.split(",", 1)[0]), header=True)
        self._jsonl = open(jsonl, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            logger.info("tensorboard is not installed: metrics go to metrics.jsonl and CSV only")
        else:
            purge = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def log(self, kind: str, step: int, **values: Any) -> None:
        """Record ``values`` at optimizer step ``step`` under ``kind`` ("train", "eval", ...)."""
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._write_csv(kind, {"step": step, **values})
        if self._tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def _write_csv(self, kind: str, row: dict[str, Any]) -> None:
        if kind not in self._csv:
            path = self.run_dir / f"{kind}.csv"
            exists = path.is_file() and path.stat().st_size > 0
            if exists:
                with open(path, encoding="utf-8", newline="") as file:
                    fields = next(csv.reader(file))
            else:
                fields = list(row)
            handle = open(path, "a", encoding="utf-8", newline="")
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            self._csv[kind] = (handle, writer)
        handle, writer = self._csv[kind]
        writer.writerow(row)
        handle.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        for handle, _ in self._csv.values():
            handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
