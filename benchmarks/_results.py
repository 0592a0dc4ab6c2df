"""Where the benchmarks keep their results, and how they write them."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import timm
import torch

import adaptkit
from adaptkit.io import atomic_write_text

RESULTS = Path(__file__).parent / "results"


def describe_device(device: str) -> str:
    """``"NVIDIA H200"``, ``"AMD EPYC 7B13, 2 threads"``: the GPU's name, or the CPU's model and torch's threads."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device != "cpu":
        return device
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():  # platform.processor() is empty on Linux
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def environment(device: str | None = None) -> dict[str, str]:
    """When and with what a result was measured: date (UTC), library versions and, given ``device``, the device."""
    env = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__, "timm": timm.__version__,
           "adaptkit": adaptkit.__version__, "python": platform.python_version()}
    if device is not None:
        env["device"] = describe_device(device)
    return env


def write_json(result: Any, path: Path, announce: bool = True, device: str | None = None) -> Path:
    """Write ``result`` to ``path`` as indented JSON, creating its folder, and say where (``announce``); returns
    ``path``. The default paths are the committed results under ``benchmarks/results/``: ``--out`` keeps them.

    A dict result gets an ``environment`` entry first: :func:`environment` (``device`` described), with what the
    result's own ``environment`` says taking precedence. So every committed result names its date and versions.

    Atomic, so a run stopped mid-write (``train_cost_gpu`` rewrites its file after every row) leaves the last
    complete file rather than a truncated one.
    """
    if isinstance(result, dict):
        result = {"environment": {**environment(device), **result.get("environment", {})},
                  **{key: value for key, value in result.items() if key != "environment"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if announce:
        print(f"wrote {path}")
    return path
