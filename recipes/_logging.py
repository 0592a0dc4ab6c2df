"""Metric logs of a run: ``metrics.jsonl`` (every record), ``<kind>.csv`` (one table per kind of record, e.g.
``train.csv`` and ``eval.csv``) and TensorBoard scalars when ``tensorboard`` is installed. Main process only."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recipes._files import atomic_write_text

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
    """Plain ``logging`` to stderr: INFO on the main process, warnings only on the others (skipped videos etc.),
    whose lines start with their rank (``RANK`` under torchrun), e.g. ``rank 1: 12:00:00 WARNING ...``, Python
    warnings (``warnings.warn``) included."""
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING, handlers=[_CurrentStderr()],
        format=("" if is_main or rank == "0" else f"rank {rank}: ") + "%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S", force=True,
    )
    logging.captureWarnings(not is_main)  # Python warnings of the other ranks, too, say whose they are


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a line that does not parse (the torn end a kill or a full disk leaves) is
    dropped with a warning naming the file."""
    records = []
    if not path.is_file():
        return records
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records.append({**record, "step": int(record["step"]), "kind": str(record["kind"])})
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is not a whole record (a write cut short?): dropped", path, number)
    return records


def _rewrite(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(lines))


class MetricLogger:
    """Append metric records to the run folder's logs: one row per (kind, step).

    Args:
        run_dir: the run folder.
        enabled: False makes every call a no-op (non-main ranks).
        resume_step: continue the existing logs from this step: records logged after it (by a run killed before
            its next checkpoint) are dropped, since the resumed run logs those steps again; a record at this step
            that the resumed run logs again (its final evaluation) replaces the old one. None starts afresh,
            removing only this logger's own files (``metrics.jsonl`` and the CSV of each kind it records).
    """

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._csv: dict[str, tuple[Any, csv.DictWriter]] = {}
        self._tensorboard = None
        self._at_resume: set[tuple[str, int]] = set()
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        jsonl = self.run_dir / "metrics.jsonl"
        records = _records(jsonl)
        if resume_step is None:
            for kind in {r["kind"] for r in records}:  # a user's own CSV files in the folder are not ours
                (self.run_dir / f"{kind}.csv").unlink(missing_ok=True)
            jsonl.unlink(missing_ok=True)
        else:
            kept = [r for r in records if r["step"] <= resume_step]
            self._at_resume = {(r["kind"], r["step"]) for r in kept if r["step"] == resume_step}
            _rewrite(jsonl, [json.dumps(r) + "\n" for r in kept])
            for kind in {r["kind"] for r in records}:
                self._keep_csv_rows(kind, lambda step: step <= resume_step)
        self._jsonl = open(jsonl, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            logger.info("tensorboard is not installed: metrics go to metrics.jsonl and CSV only")
        else:
            purge = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def has(self, kind: str, step: int) -> bool:
        """Whether the logs kept at resume hold a ``kind`` record at ``step`` (the resume step's records only)."""
        return (kind, step) in self._at_resume

    def _keep_csv_rows(self, kind: str, keep: Callable[[int], bool]) -> None:
        path = self.run_dir / f"{kind}.csv"
        if not path.is_file():
            return
        with open(path, encoding="utf-8", newline="") as file:  # newline="": keep the csv module's \r\n as written
            head, *rows = file.read().splitlines(keepends=True) or [""]
        kept = []
        for row in rows:
            try:
                if row.strip() and keep(int(row.split(",", 1)[0])):
                    kept.append(row)
            except ValueError:
                logger.warning("%s has a row that is not whole (a write cut short?): dropped", path)
        _rewrite(path, [head, *kept])

    def _replace_at_resume(self, kind: str, step: int) -> None:
        """Drop the ``kind`` record at ``step`` that the resumed run is about to log again."""
        self._at_resume.discard((kind, step))
        self._jsonl.close()
        jsonl = self.run_dir / "metrics.jsonl"
        _rewrite(jsonl, [json.dumps(r) + "\n" for r in _records(jsonl) if (r["kind"], r["step"]) != (kind, step)])
        self._jsonl = open(jsonl, "a", encoding="utf-8")
        if kind in self._csv:
            self._csv.pop(kind)[0].close()
        self._keep_csv_rows(kind, lambda row_step: row_step != step)

    def log(self, kind: str, step: int, **values: Any) -> None:
        """Record ``values`` at optimizer step ``step`` under ``kind`` ("train", "eval", ...)."""
        if not self.enabled:
            return
        if (kind, step) in self._at_resume:
            self._replace_at_resume(kind, step)
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
