"""Atomic file and folder writes (public: the recipes use them too): a crash mid-write never leaves a half-written
file or folder under the final name.

The temporary file (mode 0600 from ``mkstemp``) gets the mode a plain ``open()`` would give it under the user's umask
(0644 under umask 022) before it is renamed into place.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_directory", "atomic_write", "atomic_write_text", "exclusive_lock", "file_mode", "sha256_file"]

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks.

    The digest is remembered for this process while the file keeps its inode, size, modification and change times
    (the change time cannot be set back from user space, so any rewrite is seen): a checkpoint hashed when written
    and again by the recipes' digest list, or verified before loading and again by the loader, is read once.
    """
    info = os.stat(path)
    return _sha256_of(os.fspath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, *identity: int) -> str:  # identity: the stat fields that key the cache
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    dropped. The folder gets the mode ``mkdir`` would give it under the current umask. Staging folders that a killed
    process left behind (no cleanup runs after SIGKILL) are removed first: each staging folder's builder holds a lock
    on ``<staging>.lock`` while it builds, so one whose lock is free is abandoned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(path)
    fd, lock = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".lock", dir=path.parent)
    staging = Path(lock[: -len(".lock")])
    try:
        _lock(fd)  # before the folder exists, so no cleanup ever sees it unlocked
        staging.mkdir()
        build(staging)
        os.chmod(staging, 0o777 & ~_umask())  # what mkdir gives
        try:
            staging.rename(path)
        except OSError:  # another process finished first
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        Path(lock).unlink(missing_ok=True)
        os.close(fd)


def _lock(fd: int, wait: bool = True) -> bool:
    """An exclusive ``flock`` on ``fd``; without ``wait``, False if another process holds it. True where there is no
    ``fcntl`` (Windows): there nothing is locked, and abandoned staging folders are not looked for."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _remove_abandoned_staging(path: Path) -> None:
    """Remove the staging folders of ``path`` whose builder is gone (their lock file is free)."""
    if fcntl is None:  # no way to tell a live build from an abandoned one
        return
    for lock in path.parent.glob(f".{path.name}-*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by its builder
        try:
            if _lock(fd, wait=False):
                shutil.rmtree(lock.with_suffix(""), ignore_errors=True)
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    Raises:
        BlockingIOError: another process holds it; the message is ``busy``.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        if not _lock(fd, wait=False):
            raise BlockingIOError(busy)
        yield
    finally:
        os.close(fd)  # closing releases the lock
