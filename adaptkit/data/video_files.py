"""Which listed video files exist, found before training rather than one failed decode at a time.

Real copies of the paper's datasets are incomplete (YouTube videos of Kinetics disappear), re-encoded (SSv2 as
``.mp4`` instead of ``.webm``) or laid out differently; :func:`check_video_files` stats every listed file once (0.6 s
for Kinetics-400's 240k rows on a local disk, measured), looks for the same file name under the other video
extensions when a file is absent, and says what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .annotations import VIDEO_EXTENSIONS
from .records import VideoRecord

__all__ = ["VideoFileCheck", "check_video_files"]


@dataclass
class VideoFileCheck:
    """The outcome of :func:`check_video_files`.

    Attributes:
        records: every record, in order; the path of one found under another extension is that file's path.
        missing: positions in ``records`` of the records whose file exists under none of the extensions.
        other_extension: how many records were found under another extension than the listed one.
    """

    records: list[VideoRecord]
    missing: list[int]
    other_extension: int = 0

    @property
    def found(self) -> list[VideoRecord]:
        """The records whose file exists, in order."""
        absent = set(self.missing)
        return [record for i, record in enumerate(self.records) if i not in absent]

    @property
    def missing_fraction(self) -> float:
        """Share of the records whose file is missing, in [0, 1]."""
        return len(self.missing) / len(self.records) if self.records else 0.0

    def classes_without_video(self, classes: Sequence[str]) -> list[str]:
        """Names of the classes that have listed records but none whose file exists."""
        listed = {record.label for record in self.records}
        present = {record.label for record in self.found}
        return [classes[label] for label in sorted(listed - present)]

    def summary(self, classes: Sequence[str] | None = None, examples: int = 3,
                absent: str = "video files are missing") -> str:
        """One line: how many files are missing (share and a few paths) and, given ``classes``, the classes left
        without a video; ``"all N video files exist"`` when none is missing. ``absent`` words the count (e.g.
        ``"videos are not in the frame cache ..."`` for a check against a cache)."""
        total = len(self.records)
        moved = f" ({self.other_extension} under another extension)" if self.other_extension else ""
        if not self.missing:
            return f"all {total} video files exist{moved}"
        shown = ", ".join(self.records[i].path for i in self.missing[:examples])
        more = ", ..." if len(self.missing) > examples else ""
        share = f"{self.missing_fraction:.1%}"
        line = f"{len(self.missing)} of {total} {absent} ({share}; e.g. {shown}{more})"
        empty = self.classes_without_video(classes) if classes is not None else []
        if empty:
            line += f"; {len(empty)} class(es) left without a video: " + ", ".join(map(repr, empty[:5])) + (
                " ..." if len(empty) > 5 else "")
        return line + moved


def other_extension_paths(path: str, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[str]:
    """``path`` with each of ``extensions`` in place of its own (or added, when it has none), in order, skipping its
    own: where :func:`check_video_files` looks for a file that is not at ``path``."""
    stem, listed = os.path.splitext(path)
    return [stem + extension for extension in extensions if extension.lower() != listed.lower()]


def check_video_files(records: Sequence[VideoRecord], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> VideoFileCheck:
    """Stat every record's file; for one that does not exist, try the same path with each of ``extensions``
    (e.g. ``.mp4`` for an SSv2 copy re-encoded from ``.webm``, ``.mkv`` for a Kinetics download) and keep the first
    found.

    Args:
        records: records with paths already joined to their root.
        extensions: extensions (with the dot) tried in this order for a missing file; empty: no alternatives.

    Returns:
        A :class:`VideoFileCheck`; its ``found`` records are the ones to train on.
    """
    checked, missing, other = [], [], 0
    for position, record in enumerate(records):
        path = record.path
        if not os.path.exists(path):
            alternative = next((other for other in other_extension_paths(path, extensions) if os.path.exists(other)),
                               None)
            if alternative is None:
                missing.append(position)
            else:
                record, other = replace(record, path=alternative), other + 1
        checked.append(record)
    return VideoFileCheck(checked, missing, other)
