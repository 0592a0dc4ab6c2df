"""adaptkit.io: folders appear whole or not at all; file digests are read once and never stale."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from adaptkit import io
from adaptkit.io import atomic_directory, sha256_file


def test_atomic_directory_appears_complete_with_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_directory(tmp_path / "a" / "out", lambda d: (d / "x.txt").write_text("1"))
    finally:
        os.umask(old)
    out = tmp_path / "a" / "out"
    assert (out / "x.txt").read_text() == "1" and stat.S_IMODE(out.stat().st_mode) == 0o755
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging folder left


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_directory(tmp_path / "out", build)
    assert list(tmp_path.iterdir()) == []


def test_a_copy_finished_first_by_another_process_is_kept(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "mine.txt").write_text("mine")
        (tmp_path / "out").mkdir()  # the other process renames its copy into place first
        (tmp_path / "out" / "theirs.txt").write_text("theirs")

    atomic_directory(tmp_path / "out", build)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staging_left_by_a_killed_build_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    from adaptkit.io import exclusive_lock

    for name in ("dead", "live"):  # what a build leaves while it runs: its folder and its lock file
        (tmp_path / f".out-{name}").mkdir()
        (tmp_path / f".out-{name}" / "half.mp4").write_bytes(b"half")
        (tmp_path / f".out-{name}.lock").touch()
    with exclusive_lock(tmp_path / ".out-live.lock", "the live build holds its lock"):
        atomic_directory(tmp_path / "out", lambda d: (d / "x.txt").write_text("1"))
        assert sorted(p.name for p in tmp_path.iterdir()) == [".out-live", ".out-live.lock", "out"]
    atomic_directory(tmp_path / "other", lambda d: None)  # another name's staging is not touched
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out-live", ".out-live.lock", "other", "out"]


def test_a_file_digest_is_read_once_and_a_rewrite_is_seen_even_with_its_times_put_back(tmp_path: Path) -> None:
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"a" * 4096)
    first = sha256_file(file)
    assert first == hashlib.sha256(b"a" * 4096).hexdigest()
    hits = io._sha256_of.cache_info().hits
    assert sha256_file(file) == first and io._sha256_of.cache_info().hits == hits + 1  # not read again
    before = file.stat()
    with open(file, "r+b") as handle:  # a flipped byte in place: same inode and size
        handle.write(b"b")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))  # modification time put back
    assert sha256_file(file) == hashlib.sha256(b"b" + b"a" * 4095).hexdigest()
    file.unlink()
    file.write_bytes(b"a" * 4096)  # a new file under the same name
    assert sha256_file(file) == first
