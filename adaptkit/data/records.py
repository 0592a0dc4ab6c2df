"""The records annotation parsers produce, and the error they raise."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["AnnotationError", "Annotations", "VideoRecord"]


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video.

    Attributes:
        path: video file, already joined with the dataset root when the parser was given one.
        label: class id in ``[0, num_classes)``.
        video_id: stable identifier (YouTube id, SSv2 id, file stem ...) recorded with evaluation results.
        start_frame: first usable frame, or None for the whole video.
        end_frame: frames ``start_frame <= i < end_frame`` are used (cut to the decoded length), or None. The
            datasets skip a record whose ``start_frame`` is past the video's last frame.
    """

    path: str
    label: int
    video_id: str
    start_frame: int | None = None
    end_frame: int | None = None


@dataclass
class Annotations:
    """Parsed annotation file: the records plus the class names indexed by label."""

    records: list[VideoRecord]
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class AnnotationError(ValueError):
    """An annotation line or entry does not parse. Names the file and the 1-based line (or the JSON entry index)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        line: int | None = None,
        entry: int | None = None,
    ) -> None:
        self.path, self.reason, self.line, self.entry = os.fspath(path), reason, line, entry
        where = self.path
        if line is not None:
            where += f", line {line}"
        if entry is not None:
            where += f", entry {entry} (0-based)"
        super().__init__(f"{where}: {reason}")
