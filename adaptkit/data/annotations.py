"""Annotation parsers for the datasets of the AIM paper, behind a small format registry.

Every parser has the signature ``parser(path, root=None, **options) -> Annotations``; ``root`` is joined in front of
each video path (absolute paths stay as they are). A video listed twice with the same label is kept once, with one
warning (evaluation would count it twice); listed with two labels, it is an error naming both lines.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from .records import AnnotationError, Annotations, VideoRecord

__all__ = [
    "ANNOTATION_FORMATS",
    "VIDEO_EXTENSIONS",
    "kinetics_classes",
    "list_annotation_formats",
    "load_annotations",
    "parse_diving48_json",
    "parse_folder_tree",
    "parse_kinetics_csv",
    "parse_ssv2_json",
    "parse_video_list",
    "register_annotation_format",
]

logger = logging.getLogger(__name__)

Parser = Callable[..., Annotations]
ANNOTATION_FORMATS: dict[str, Parser] = {}
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
DIVING48_NUM_CLASSES = 48


def register_annotation_format(name: str) -> Callable[[Parser], Parser]:
    """Decorator registering ``parser`` under ``name`` for :func:`load_annotations`.

    Raises:
        ValueError: when the decorator is applied, if ``name`` is already registered.
    """

    def add(parser: Parser) -> Parser:
        if name in ANNOTATION_FORMATS:
            raise ValueError(f"annotation format {name!r} is already registered")
        ANNOTATION_FORMATS[name] = parser
        return parser

    return add


def list_annotation_formats() -> list[str]:
    """Names accepted by :func:`load_annotations`."""
    return sorted(ANNOTATION_FORMATS)


def load_annotations(format: str, path: str | os.PathLike[str], root: str | None = None, **options: Any) -> Annotations:
    """Parse an annotation file (or folder) of a registered format.

    Args:
        format: one of :func:`list_annotation_formats` (``video_list``, ``kinetics_csv``, ``ssv2_json``,
            ``diving48_json``, ``folder_tree``).
        path: annotation file, or the dataset folder for ``folder_tree``.
        root: folder joined in front of every video path.
        **options: format-specific options (e.g. ``classes`` for Kinetics validation CSVs).

    Returns:
        The records and the class names.

    Raises:
        ValueError: unknown format.
        AnnotationError: a line or entry does not parse; the message names the file and line/entry.

    Example:
        >>> ann = load_annotations("video_list", "train_list.txt", root="videos/")  # doctest: +SKIP
    """
    if format not in ANNOTATION_FORMATS:
        raise ValueError(f"unknown annotation format {format!r}; valid: {list_annotation_formats()}")
    return ANNOTATION_FORMATS[format](path, root=root, **options)


def _join(root: str | os.PathLike[str] | None, relative: str) -> str:
    return relative if root is None else os.path.join(os.fspath(root), relative)


def _parse_int(value: Any, what: str, error: Callable[[str], AnnotationError]) -> int:
    """An int from an int, an integral float (3.0) or a string of one; 3.7, true and "3.7" are refused rather than
    truncated (``int(3.7) == 3``, ``int(True) == 1``)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise error(f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise error(f"{what} must be an integer, got {value!r}") from None


def _extension(extension: str) -> str:
    """``"mp4"`` or ``".mp4"`` -> ``".mp4"``."""
    bare = extension.lstrip(".") if isinstance(extension, str) else ""
    if not bare or not bare.isalnum():
        raise ValueError(f"extension must be like '.mp4', got {extension!r}")
    return "." + bare


def _drop_duplicates(path: str | os.PathLike[str], records: list[VideoRecord], places: list[int], where: str,
                     classes: Sequence[str], keys: Sequence[Hashable] | None = None) -> list[VideoRecord]:
    """``records`` without repeats of one video, keeping the first. A video is ``keys[i]`` when given (Kinetics: the
    YouTube id and time window, whatever class folder the label puts it in), else its file (the path normalised:
    ``a/./x.mp4`` and ``a//x.mp4`` are ``a/x.mp4``) and frame window. ``places`` are the records' line numbers
    (``where="line"``) or entry indices (``where="entry"``).

    Raises:
        AnnotationError: a video is listed with two different labels (both places and labels named).
    """
    if keys is None:
        keys = [(os.path.normpath(record.path), record.start_frame, record.end_frame) for record in records]
    first: dict[Hashable, int] = {}
    kept, dropped = [], []
    for position, (record, place, key) in enumerate(zip(records, places, keys)):
        if key not in first:
            first[key] = position
            kept.append(record)
            continue
        earlier = records[first[key]]
        if earlier.label != record.label:
            raise AnnotationError(
                path, f"video {record.video_id!r} is listed twice with different labels: {where} "
                f"{places[first[key]]} says {classes[earlier.label]!r}, {where} {place} says {classes[record.label]!r}",
                **{where: place})
        dropped.append((places[first[key]], place))
    if dropped:
        logger.warning("%s: %d duplicate %ss dropped (a video listed again with the same label; e.g. %s %d repeats "
                       "%s %d)", os.fspath(path), len(dropped), where, where, dropped[0][1], where, dropped[0][0])
    return kept


def _class_folders(root: str | os.PathLike[str] | None, labels: Sequence[str]) -> dict[str, str]:
    """The folder of each class label under ``root``: the label itself when that folder exists, else the one folder
    whose name differs only in punctuation, spaces and case: MMAction2's ``rename_classnames.sh`` turns spaces into
    ``_`` (AIM's copy turns ``)`` into ``-``), ``detox`` also drops quotes and parentheses."""

    def key(name: str) -> str:
        return "".join(character for character in name.casefold() if character.isalnum())

    try:
        on_disk = [entry.name for entry in os.scandir(os.fspath(root) if root is not None else ".") if entry.is_dir()]
    except OSError:
        return {label: label for label in labels}
    existing = set(on_disk)
    folders_by_key: dict[str, list[str]] = {}
    for name in on_disk:
        folders_by_key.setdefault(key(name), []).append(name)
    labels_per_key: dict[str, int] = {}
    for label in labels:
        labels_per_key[key(label)] = labels_per_key.get(key(label), 0) + 1
    folders = {}
    for label in labels:
        matches = folders_by_key.get(key(label), [])
        unique = len(matches) == 1 and labels_per_key[key(label)] == 1
        folders[label] = matches[0] if label not in existing and unique else label
    renamed = [(label, folder) for label, folder in folders.items() if label != folder]
    if renamed:
        logger.info("%d class folders under %s have renamed names (e.g. %r for %r)", len(renamed), root,
                    renamed[0][1], renamed[0][0])
    return folders


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as decode_error:
        raise AnnotationError(path, f"invalid JSON: {decode_error.msg}", line=decode_error.lineno) from None


def _check_label(label: int, classes: Sequence[str], error: Callable[[str], AnnotationError]) -> None:
    if not 0 <= label < len(classes):
        raise error(f"label {label} outside [0, {len(classes)})")


@register_annotation_format("video_list")
def parse_video_list(
    path: str | os.PathLike[str],
    root: str | None = None,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> Annotations:
    """MMAction2 video list: one ``relative/path.mp4 <int label>`` per line, space separated; blank lines skipped.

    ``classes`` names the labels. Without it, ``num_classes`` fixes how many there are (names ``"0"`` ..
    ``str(num_classes - 1)``, e.g. a recipe's ``data.num_classes``), else the largest label does. A label outside
    them is reported with its line. Multi-label lines are rejected.

    Raises:
        AnnotationError: a malformed line, a label out of range, or one video listed with two labels (file and
            lines named).
        ValueError: ``classes`` and ``num_classes`` disagree, or ``num_classes`` < 1.
    """
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names given for num_classes={num_classes}")
    bound = len(classes) if classes is not None else num_classes
    records, lines = [], []
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.split()
            if not fields:
                continue
            error = functools.partial(AnnotationError, path, line=line_number)
            if len(fields) != 2:
                raise error(f"expected 'path label' (one label, no spaces in the path), got {line.strip()!r}")
            label = _parse_int(fields[1], "label", error)
            if label < 0 or (bound is not None and label >= bound):
                raise error(f"label {label} " + ("must be >= 0" if bound is None else f"outside [0, {bound})"))
            records.append(VideoRecord(_join(root, fields[0]), label, os.path.splitext(fields[0])[0]))
            lines.append(line_number)
    if classes is None:
        count = num_classes if num_classes is not None else max((r.label for r in records), default=-1) + 1
        classes = [str(i) for i in range(count)]
    return Annotations(_drop_duplicates(path, records, lines, "line", classes), list(classes))


def _kinetics_rows(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row by column name). A header row (any column order, recognised by a ``youtube_id``,
    ``time_start`` or ``time_end`` column, which no data row can hold) names the columns; without one they are in
    the official order ``label,youtube_id,time_start,time_end,...``."""
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as file:  # -sig: spreadsheet programs write a byte-order mark
        reader = csv.reader(file)
        columns: list[str] | None = None
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if columns is None and not rows and {"youtube_id", "time_start", "time_end"} & {c.lower() for c in cells}:
                columns = [cell.lower() for cell in cells]
                missing = [name for name in KINETICS_COLUMNS[:4] if name not in columns]
                if missing:
                    unlabelled = " (a test split without labels cannot be trained or evaluated on)" * (
                        missing == ["label"])
                    raise AnnotationError(path, f"header lacks columns {missing}{unlabelled}", line=reader.line_num)
                continue
            names = columns or list(KINETICS_COLUMNS)
            needed = 1 + max(names.index(name) for name in KINETICS_COLUMNS[:4])
            if len(cells) < needed:
                expected = ",".join(names) if columns else f"{','.join(KINETICS_COLUMNS)}[,is_cc]"
                raise AnnotationError(path, f"expected columns {expected}, got {row}", line=reader.line_num)
            rows.append((reader.line_num, dict(zip(names, cells))))
    return rows


def kinetics_classes(train_csv: str | os.PathLike[str]) -> list[str]:
    """Kinetics class names = the sorted unique labels of the TRAIN csv (use them for the validation csv too)."""
    return sorted({row["label"] for _, row in _kinetics_rows(train_csv)})


@register_annotation_format("kinetics_csv")
def parse_kinetics_csv(
    path: str | os.PathLike[str],
    root: str | None = None,
    classes: Sequence[str] | None = None,
    class_folders: bool = False,
    extension: str = ".mp4",
) -> Annotations:
    """Kinetics CSV ``label,youtube_id,time_start,time_end,split[,is_cc]``: in this order without a header row; a
    header row (recognised by a ``youtube_id``, ``time_start`` or ``time_end`` column, in any case) may order the
    columns differently and leave out ``split``.

    Clip file: ``{youtube_id}_{time_start:06d}_{time_end:06d}{extension}``, inside the class's folder when
    ``class_folders``: ``{label}/``, or when that folder does not exist under ``root`` the one whose name differs
    only in spaces, punctuation and case (MMAction2's ``rename_classnames.sh`` layout, ``air_drumming/``).
    ``classes`` should be :func:`kinetics_classes` of the train csv; without it this csv's own sorted labels are used
    (right only for the train csv itself). ``video_id`` is the YouTube id. ``extension``: e.g. ``.mkv`` or ``.webm``
    for downloads kept in YouTube's container.

    Raises:
        AnnotationError: a header without the needed columns, a row of the wrong width, a label not in ``classes``,
            a non-integer time, or one video listed with two labels (file and lines named).
        ValueError: ``extension`` is not like ``.mp4``.
    """
    extension = _extension(extension)
    rows = _kinetics_rows(path)
    class_names = sorted({row["label"] for _, row in rows}) if classes is None else list(classes)
    class_ids = {name: i for i, name in enumerate(class_names)}
    folders = _class_folders(root, class_names) if class_folders else {}
    records, clips = [], []
    for line_number, row in rows:
        error = functools.partial(AnnotationError, path, line=line_number)
        if row["label"] not in class_ids:
            raise error(f"unknown class {row['label']!r}")
        start = _parse_int(row["time_start"], "time_start", error)
        end = _parse_int(row["time_end"], "time_end", error)
        file_name = f"{row['youtube_id']}_{start:06d}_{end:06d}{extension}"
        relative = os.path.join(folders[row["label"]], file_name) if class_folders else file_name
        records.append(VideoRecord(_join(root, relative), class_ids[row["label"]], row["youtube_id"]))
        clips.append((row["youtube_id"], start, end))
    lines = [line for line, _ in rows]
    return Annotations(_drop_duplicates(path, records, lines, "line", class_names, clips), class_names)


# Where parse_ssv2_json looks for the class list, in order: the short name, then the official download's name.
SSV2_LABEL_FILES = ("labels.json", "something-something-v2-labels.json")


@register_annotation_format("ssv2_json")
def parse_ssv2_json(
    path: str | os.PathLike[str], root: str | None = None, labels_path: str | os.PathLike[str] | None = None,
    extension: str = ".webm",
) -> Annotations:
    """Something-Something-v2 ``train.json`` / ``validation.json`` with the labels file (text -> id as a string).

    The class is the entry's template with ``[`` and ``]`` removed; the video is ``{id}{extension}`` (``.mp4`` for
    copies re-encoded from the official ``.webm``). ``labels_path``
    defaults to the first of :data:`SSV2_LABEL_FILES` found next to ``path``: ``labels.json`` or the official
    download's ``something-something-v2-labels.json``.

    Raises:
        AnnotationError: no labels file found (the message names both names and the ``labels_path`` option, in a
            recipe ``data.options.labels_path``), a malformed entry, or one video listed with two templates.
        ValueError: ``extension`` is not like ``.webm``.
    """
    extension = _extension(extension)
    if labels_path is None:
        candidates = [Path(path).with_name(name) for name in SSV2_LABEL_FILES]
        labels_path = next((c for c in candidates if c.is_file()), None)
        if labels_path is None:
            raise AnnotationError(
                path, f"no SSv2 labels file next to it (looked for {' or '.join(SSV2_LABEL_FILES)}); pass labels_path "
                "(in a recipe config: data.options.labels_path)")
    elif not Path(labels_path).is_file():
        raise AnnotationError(labels_path, "SSv2 labels file not found (set labels_path, in a recipe config "
                                           "data.options.labels_path)")
    label_map = _read_json(labels_path)
    if not isinstance(label_map, dict):
        raise AnnotationError(labels_path, "expected an object mapping class text to id")
    class_ids: dict[str, int] = {}
    for text, value in label_map.items():
        class_ids[text] = _parse_int(value, f"id of {text!r}", lambda reason: AnnotationError(labels_path, reason))
    classes = [""] * len(class_ids)
    for text, class_id in class_ids.items():
        if not 0 <= class_id < len(classes) or classes[class_id]:
            raise AnnotationError(labels_path, f"ids must be 0..{len(classes) - 1} without gaps, got {class_id}")
        classes[class_id] = text
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(path, "expected a list of entries")
    records = []
    for index, entry in enumerate(entries):
        error = functools.partial(AnnotationError, path, entry=index)
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise error("expected an object with 'id' and 'template' (the test split has no labels)")
        text = str(entry["template"]).replace("[", "").replace("]", "")
        if text not in class_ids:
            raise error(f"template {text!r} is not in {labels_path}")
        video_id = str(entry["id"])
        records.append(VideoRecord(_join(root, f"{video_id}{extension}"), class_ids[text], video_id))
    return Annotations(_drop_duplicates(path, records, list(range(len(records))), "entry", classes), classes)


@register_annotation_format("diving48_json")
def parse_diving48_json(
    path: str | os.PathLike[str], root: str | None = None, vocab_path: str | os.PathLike[str] | None = None,
    extension: str = ".mp4",
) -> Annotations:
    """Diving-48 V2 list of ``{vid_name, label, start_frame, end_frame}``; video ``{vid_name}{extension}``; 48
    classes.

    ``vocab_path`` (``Diving48_vocab.json``, 48 lists of 4 words) gives class names; without it they are "0".."47".
    Frame windows are 0-based, ``end_frame`` exclusive.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        AnnotationError: ``vocab_path`` is given but missing or not 48 descriptions; invalid JSON; an entry without
            the four keys, with a non-integer field (3.7 and true are refused, not truncated), a label outside
            [0, 48) or not 0 <= start_frame < end_frame (file and entry named); one video listed with two labels.
        ValueError: ``extension`` is not like ``.mp4``.
    """
    extension = _extension(extension)
    if vocab_path is None:
        classes = [str(i) for i in range(DIVING48_NUM_CLASSES)]
    elif not Path(vocab_path).is_file():
        raise AnnotationError(vocab_path, "Diving-48 vocabulary file not found (set vocab_path, in a recipe config "
                                          "data.options.vocab_path)")
    else:
        vocab = _read_json(vocab_path)
        if not isinstance(vocab, list) or len(vocab) != DIVING48_NUM_CLASSES:
            raise AnnotationError(vocab_path, f"expected a list of {DIVING48_NUM_CLASSES} class descriptions")
        classes = [" ".join(words) if isinstance(words, list) else str(words) for words in vocab]
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(path, "expected a list of entries")
    records = []
    for index, entry in enumerate(entries):
        error = functools.partial(AnnotationError, path, entry=index)
        keys = ("vid_name", "label", "start_frame", "end_frame")
        if not isinstance(entry, dict) or any(key not in entry for key in keys):
            raise error(f"expected an object with keys {keys}")
        label = _parse_int(entry["label"], "label", error)
        _check_label(label, classes, error)
        start = _parse_int(entry["start_frame"], "start_frame", error)
        end = _parse_int(entry["end_frame"], "end_frame", error)
        if not 0 <= start < end:
            raise error(f"need 0 <= start_frame < end_frame, got {start}, {end}")
        name = str(entry["vid_name"])
        records.append(VideoRecord(_join(root, f"{name}{extension}"), label, name, start, end))
    return Annotations(_drop_duplicates(path, records, list(range(len(records))), "entry", classes), classes)


def _videos_under(folder: Path, suffixes: set[str]) -> list[Path]:
    """Sorted files under ``folder`` with one of ``suffixes``. Symlinked folders are followed (datasets are often
    assembled from links), each real folder once: a link cycle or a second link to a folder already read adds
    nothing."""
    seen: set[tuple[int, int]] = set()
    videos = []
    for top, folders, files in os.walk(folder, followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in seen:
            folders.clear()  # read already, through another link (or this is a cycle): do not descend again
            continue
        seen.add((stat.st_dev, stat.st_ino))
        folders.sort()  # the first link to a folder is the one its videos are listed under
        videos += [path for path in (Path(top, name) for name in files)
                   if path.suffix.lower() in suffixes and path.is_file()]
    return sorted(videos)


@register_annotation_format("folder_tree")
def parse_folder_tree(
    path: str | os.PathLike[str], root: str | None = None, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> Annotations:
    """One sub-folder per class (``path/<class>/**/<video>``); classes = sorted sub-folder names.

    Video paths are joined with ``root`` when given, else with ``path``; ``video_id`` is the path relative to
    ``path`` without the extension. Symlinked folders are followed, each real folder once (a cycle ends there).

    Raises:
        AnnotationError: ``path`` is not a folder, or no class sub-folder holds a file with one of ``extensions``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise AnnotationError(path, "not a folder")
    suffixes = {extension.lower() for extension in extensions}
    classes = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    records = []
    for label, name in enumerate(classes):
        for video in _videos_under(folder / name, suffixes):
            relative = video.relative_to(folder).as_posix()
            base = folder if root is None else root
            records.append(VideoRecord(os.path.join(os.fspath(base), relative), label, relative.rsplit(".", 1)[0]))
    if not records:
        raise AnnotationError(path, f"no videos with extensions {sorted(suffixes)} in class sub-folders")
    return Annotations(records, classes)
