"""Atomic file and folder writes (public: the recipes use them too): a crash mid-write never leaves a half-written
file or folder under the final name.

The temporary file (mode 0600 from ``mkstemp``) gets the mode a plain ``open()`` would give it under the user's umask
(0644 under umask 022) before it is renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_directory(path: str | Path, build: Callable[[Path], None]) -> None:
    """Call ``build(tmp_dir)`` on a new folder beside ``path``, then rename it to ``path``.

    If another process created ``path`` meanwhile (it too appears only complete), its copy is kept and this one is
    dropped. The folder gets the mode ``mkdir`` would give it under the current umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        build(staging)
        os.chmod(staging, 0o777 & ~_umask())  # what mkdir gives; mkdtemp's is 0700
        try:
            staging.rename(path)
        except OSError:  # another process finished first
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
