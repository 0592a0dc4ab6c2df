"""Where the benchmarks write their results, and how they name the device they measured on (benchmarks/README.md,
"Reading the results": every module writes its JSON to ``benchmarks/results/`` unless ``--out`` says otherwise, and a
CPU is named by its model and torch's threads)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

from benchmarks import checkout_ratio, frame_attention, saved_memory, train_cost
from benchmarks._results import RESULTS, describe_device

MODEL = "vit_tiny_patch16_224"


def _capture_writes(module, monkeypatch) -> list[tuple[dict, Path]]:
    written = []
    monkeypatch.setattr(module, "write_json", lambda result, path, *args, **kwargs: written.append((result, path)))
    return written


def test_saved_memory_writes_its_json_to_results_by_default(monkeypatch):
    written = _capture_writes(saved_memory, monkeypatch)
    saved_memory.main(["--model", MODEL, "--frames", "2", "--image-size", "32", "--batch", "1", "--rows", "aim",
                       "--device", "cpu", "--top", "0"])
    assert [path for _, path in written] == [RESULTS / "saved_memory.json"]


class _FakeWorker:
    """A checkout_ratio worker that answers at once: its FLOP counts, "ready", then a step time per request."""

    def __init__(self, *args, **kwargs) -> None:
        self.stdout = io.StringIO(json.dumps({"aim": 3, "aim temporal=False": 2}) + "\nready\n" + "0.5\n" * 100)
        self.stdin = io.StringIO()

    def wait(self) -> int:
        return 0


def test_checkout_ratio_writes_its_json_to_results_by_default(monkeypatch, tmp_path):
    fake = SimpleNamespace(Popen=_FakeWorker, PIPE=subprocess.PIPE, run=subprocess.run)  # run: git rev-parse
    monkeypatch.setattr(checkout_ratio, "subprocess", fake)
    written = _capture_writes(checkout_ratio, monkeypatch)
    checkout_ratio.main([str(tmp_path / "before"), str(tmp_path / "after"), "--repeats", "1"])
    [(result, path)] = written
    assert path == RESULTS / "checkout_ratio.json"
    assert result["environment"]["device"] == describe_device("cpu").split(",")[0] + ", one thread per worker"


def test_the_kernel_benchmark_names_the_cpu_model(tmp_path):
    frame_attention.main(["--device", "cpu", "--batch", "1", "--frames", "2", "--tokens", "2", "--heads", "1",
                          "--head-dim", "4", "--repeats", "1", "--warmup", "0", "--copy-mib", "1",
                          "--out", str(tmp_path / "fa.json")])
    device = json.loads((tmp_path / "fa.json").read_text())["environment"]["device"]
    assert device == describe_device("cpu") and device.endswith(" threads") and device != "cpu"


def test_the_gpu_protocol_dry_run_names_the_cpu_model(tmp_path, monkeypatch):
    from benchmarks import train_cost_gpu

    monkeypatch.setattr(train_cost_gpu, "train_row", lambda *args: {})  # the row's step is not what is checked
    train_cost.main(["--device", "cpu", "--protocol", "gpu", "--model", MODEL, "--rows", "aim", "--no-inference",
                     "--compile", "", "--matmul-size", "16", "--steps", "1", "--warmup", "0", "--image-size", "32",
                     "--frames", "2", "--batch", "1", "--out", str(tmp_path / "gpu.json")])
    device = json.loads((tmp_path / "gpu.json").read_text())["environment"]["device"]
    assert device == describe_device("cpu") and device.endswith(" threads")
