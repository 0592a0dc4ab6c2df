"""Where the benchmarks keep their results, and how they write them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptkit.io import atomic_write_text

RESULTS = Path(__file__).parent / "results"


def write_json(result: Any, path: Path, announce: bool = True) -> Path:
    """Write ``result`` to ``path`` as indented JSON, creating its folder, and say where (``announce``); returns
    ``path``. The default paths are the committed results under ``benchmarks/results/``: ``--out`` keeps them.

    Atomic, so a run stopped mid-write (``train_cost_gpu`` rewrites its file after every row) leaves the last
    complete file rather than a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if announce:
        print(f"wrote {path}")
    return path
