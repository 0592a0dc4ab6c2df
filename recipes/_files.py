"""Files of a run folder: atomic writes that respect the user's umask, and the SHA-256 digests checkpoints record.

Atomic writes come from :mod:`adaptkit.io`: a kill mid-write never leaves a half-written file under the final
name, and files get the user's umask (0644 under umask 022).

safetensors files carry no checksum: a flipped bit inside the tensor data loads silently. A model folder therefore
lists the SHA-256 of each of its files in ``digests.json`` (written last), and loading verifies them.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptkit.io import atomic_write, atomic_write_text, file_mode, sha256_file  # noqa: F401  (re-exported)

DIGESTS_FILE = "digests.json"


class CorruptFileError(RuntimeError):
    """A file of a model folder does not match the digest recorded when it was written, or is missing."""


def write_digests(folder: str | Path) -> None:
    """Record the SHA-256 of every file in ``folder`` (not recursing) in ``folder/digests.json``."""
    folder = Path(folder)
    digests = {p.name: sha256_file(p) for p in sorted(folder.iterdir())
               if p.is_file() and p.name != DIGESTS_FILE and not p.name.startswith(".")}
    atomic_write_text(folder / DIGESTS_FILE, json.dumps(digests, indent=1) + "\n")


def verify_digests(folder: str | Path, required: bool = False) -> None:
    """Check every file listed in ``folder/digests.json`` against its recorded digest.

    Args:
        folder: a model folder or checkpoint.
        required: a missing ``digests.json`` is an error (checkpoints always have one); otherwise nothing is checked
            (a plain ``save_pretrained`` folder has none).

    Raises:
        CorruptFileError: naming the first file that is missing or differs.
    """
    folder = Path(folder)
    listing = folder / DIGESTS_FILE
    if not listing.is_file():
        if required:
            raise CorruptFileError(f"{listing} is missing: the checkpoint was not completely written")
        return
    try:
        digests = json.loads(listing.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{listing} is unreadable: {error}") from None
    for name, expected in digests.items():
        file = folder / name
        if not file.is_file():
            raise CorruptFileError(f"{file} is missing (listed in {DIGESTS_FILE})")
        if sha256_file(file) != expected:
            raise CorruptFileError(f"{file} is corrupt: its SHA-256 differs from the one recorded when it was written")
