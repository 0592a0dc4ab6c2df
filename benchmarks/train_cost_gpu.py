"""Training and inference cost on a GPU, measured in one process.

    python -m benchmarks.train_cost --device cuda     # ~4 min on an H200; writes benchmarks/results/train_cost_cuda.json

Setting (AIM issue "Fast temporal path"): ViT-B/16 CLIP architecture with random weights, 8 frames
of 224x224, 16 clips per step, bf16 autocast, fused AdamW. For each row:

- step time eager and ``torch.compile``d (mean over ``--steps`` steps after warm-up; compilation
  happens in the warm-up), clips/s;
- peak memory (``torch.cuda.max_memory_allocated`` over the timed steps);
- FLOPs per step counted by ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward;
- MFU: FLOPs per step / step time / the card's dense bf16 matmul rate, measured here on 8192^3
  products.

Rows run most important first and the JSON is rewritten after each one, so a row that fails (or a
run cut short) loses nothing else. Then inference: clips/s at batch 32, bf16, eager and compiled,
for AIM and the plain image model (``linear-probe``: the image model frame by frame, mean over time).

``--device cpu --protocol gpu`` with tiny sizes runs the same code on a CPU (a dry run: the
numbers mean nothing there).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._cli import ArgumentParser, non_negative_int, positive_int
from benchmarks.train_cost import GIB, RESULTS, SETTINGS, build
from benchmarks._results import describe_device, write_json

TRAIN_ROWS = ["aim", "aim temporal=False", "aim kernel=tiled", "timesformer", "aim checkpointing=none", "space-only",
              "linear-probe", "aim kernel=pytorch", "aim checkpointing=temporal", "aim checkpointing=True"]
# The goals compare the first two; "kernel=tiled" is the other Triton design (the faster becomes the default);
# "none" shows what recomputing AIM's cheap parts costs once compiled.
COMPILED_ROWS = ["aim", "aim temporal=False", "aim kernel=tiled", "aim checkpointing=none"]
INFERENCE_ROWS = {"aim": "aim", "aim kernel=tiled": "aim kernel=tiled", "image model": "linear-probe"}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, size: int, repeats: int = 20) -> float:
    """Measured dense bf16 matmul rate in FLOP/s (2 size^3 per product)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def seconds_per_call(fn: Callable[[], object], device: str, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / GIB, 2) if device.startswith("cuda") else None


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_row(label: str, args: argparse.Namespace, rate: float, compile_it: bool) -> dict:
    device = args.device
    vm = build(SETTINGS[label], device, args.image_size, args.frames, args.model)
    trainable = [p for p in vm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.startswith("cuda"))
    video = torch.randn(args.batch, 3, args.frames, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 400, (args.batch,), device=device)

    def step(model: torch.nn.Module) -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = F.cross_entropy(model(video).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            loss = F.cross_entropy(vm(video).float(), labels)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    row: dict = {"tflop_per_step": round(flops / 1e12, 3)}

    def record(kind: str, seconds: float) -> None:
        row[f"step_ms_{kind}"] = round(seconds * 1e3, 2)
        row[f"clips_per_s_{kind}"] = round(args.batch / seconds, 1)
        row[f"mfu_{kind}"] = round(flops / seconds / rate, 4)
        row[f"peak_gib_{kind}"] = _peak_gib(device)

    _reset_peak(device)
    record("eager", seconds_per_call(lambda: step(vm), device, args.warmup, args.steps))
    if compile_it:
        compiled = torch.compile(vm)
        _reset_peak(device)
        start = time.perf_counter()
        step(compiled)  # compiles forward and backward
        row["compile_s"] = round(time.perf_counter() - start, 1)
        record("compiled", seconds_per_call(lambda: step(compiled), device, args.warmup, args.steps))
    return row


def inference_row(strategy: str, args: argparse.Namespace, compile_it: bool) -> dict:
    device = args.device
    vm = build(SETTINGS[strategy], device, args.image_size, args.frames, args.model).eval()
    video = torch.randn(args.inference_batch, 3, args.frames, args.image_size, args.image_size, device=device)

    def forward(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                return model(video)
        return run

    row = {"clips_per_s_eager": round(args.inference_batch / seconds_per_call(forward(vm), device, args.warmup,
                                                                               args.steps), 1)}
    if compile_it:
        seconds = seconds_per_call(forward(torch.compile(vm)), device, args.warmup, args.steps)
        row["clips_per_s_compiled"] = round(args.inference_batch / seconds, 1)
    return row


def summary(result: dict) -> dict:
    """The issue's goals as ratios, from whatever rows were measured."""
    train, infer = result["train"], result["inference"]

    def ratio(a: dict | None, b: dict | None, key: str, key_b: str | None = None) -> float | None:
        if not a or not b or a.get(key) is None or b.get(key_b or key) is None:
            return None
        return round(a[key] / b[key_b or key], 3)

    aim, no_temporal, tiled = train.get("aim"), train.get("aim temporal=False"), train.get("aim kernel=tiled")
    return {
        "aim_step_vs_temporal_false_compiled": ratio(aim, no_temporal, "step_ms_compiled"),
        "aim_step_vs_temporal_false_eager": ratio(aim, no_temporal, "step_ms_eager"),
        "aim_tiled_step_vs_temporal_false_compiled": ratio(tiled, no_temporal, "step_ms_compiled"),
        "aim_tiled_step_vs_temporal_false_eager": ratio(tiled, no_temporal, "step_ms_eager"),
        "aim_peak_vs_timesformer_eager": ratio(aim, train.get("timesformer"), "peak_gib_eager"),
        "aim_checkpointing_none_peak_vs_timesformer_eager": ratio(train.get("aim checkpointing=none"),
                                                                  train.get("timesformer"), "peak_gib_eager"),
        "aim_checkpointing_temporal_peak_vs_timesformer_eager": ratio(train.get("aim checkpointing=temporal"),
                                                                      train.get("timesformer"), "peak_gib_eager"),
        "aim_inference_vs_image_model_eager": ratio(infer.get("aim"), infer.get("image model"), "clips_per_s_eager"),
        "aim_inference_vs_image_model_compiled": ratio(infer.get("aim"), infer.get("image model"),
                                                       "clips_per_s_compiled"),
        "aim_tiled_inference_vs_image_model_compiled": ratio(infer.get("aim kernel=tiled"), infer.get("image model"),
                                                             "clips_per_s_compiled"),
    }


def print_tables(result: dict) -> None:
    setting = result["setting"]
    print(f"\n{result['environment']['device']}, {result['environment']['date']}: {setting['model']}, "
          f"{setting['frames']}x{setting['image_size']}^2, {setting['batch']} clips/step, bf16 autocast, fused AdamW; "
          f"matmul {result['matmul_tflops']} TFLOP/s")
    print(f"{'row':28s} {'eager ms':>9s} {'compiled ms':>11s} {'TFLOP':>7s} {'MFU eager':>9s} {'MFU comp':>8s} "
          f"{'peak GiB':>8s}")
    for label, row in result["train"].items():
        if "error" in row:
            print(f"{label:28s} failed: {row['error']}")
            continue

        def cell(key: str, width: int, percent: bool = False) -> str:
            value = row.get(key)
            if value is None:
                return f"{'-':>{width}s}"
            return f"{100 * value:>{width - 1}.1f}%" if percent else f"{value:>{width}}"

        print(f"{label:28s} {cell('step_ms_eager', 9)} {cell('step_ms_compiled', 11)} {cell('tflop_per_step', 7)} "
              f"{cell('mfu_eager', 9, True)} {cell('mfu_compiled', 8, True)} {cell('peak_gib_eager', 8)}")
    print(f"inference, batch {setting['inference_batch']}, clips/s (eager / compiled):")
    for label, row in result["inference"].items():
        print(f"  {label:12s} {row.get('clips_per_s_eager', row.get('error'))} / {row.get('clips_per_s_compiled', '-')}")
    print("summary:", json.dumps(result["summary"]))


def main(args: argparse.Namespace, rest: list[str]) -> dict:
    parser = ArgumentParser(prog="benchmarks.train_cost --device cuda")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--matmul-size", type=positive_int, default=8192)
    parser.add_argument("--compile", default=",".join(COMPILED_ROWS), help="rows also timed compiled ('' for none)")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--inference-only", action="store_true", help="only the inference table")
    args = parser.parse_args(rest, namespace=args)
    args.image_size = args.image_size or 224
    args.batch = args.batch or 16
    args.inference_batch = args.inference_batch or 32  # these two options are train_cost's
    args.rows = args.rows or ",".join(TRAIN_ROWS)
    out: Path = args.out or RESULTS / f"train_cost_{args.device.split(':')[0]}.json"
    compiled_rows = set(filter(None, args.compile.split(",")))

    rate = matmul_rate(args.device, args.matmul_size)
    result = {
        "environment": {"device": describe_device(args.device),
                        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "torch": torch.__version__, "timm": timm.__version__},
        "setting": {"model": args.model, "frames": args.frames, "image_size": args.image_size, "batch": args.batch,
                    "inference_batch": args.inference_batch, "steps": args.steps, "warmup": args.warmup,
                    "precision": "bf16 autocast", "optimizer": "AdamW (fused on CUDA)"},
        "matmul_tflops": round(rate / 1e12, 1),
        "train": {},
        "inference": {},
    }

    def save() -> None:
        result["summary"] = summary(result)
        write_json(result, out, announce=False)  # after every row

    def attempt(table: str, label: str, measure: Callable[[], dict]) -> None:
        start = time.perf_counter()
        try:
            result[table][label] = measure()
        except Exception as error:  # one failing row must not lose the others
            traceback.print_exc()
            result[table][label] = {"error": f"{type(error).__name__}: {error}"[:500]}
        result[table][label]["wall_s"] = round(time.perf_counter() - start, 1)
        print(f"{table} {label}: {json.dumps(result[table][label])}", flush=True)
        save()
        torch._dynamo.reset()  # drop compiled graphs and their memory before the next row
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    rows = [] if args.inference_only else [r for r in args.rows.split(",") if r]
    if args.inference_only:
        for name, strategy in INFERENCE_ROWS.items():
            attempt("inference", name, lambda s=strategy: inference_row(s, args, bool(compiled_rows)))
    unknown = [r for r in rows if r not in SETTINGS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(SETTINGS)}")
    for index, label in enumerate(rows):
        attempt("train", label, lambda label=label: train_row(label, args, rate, label in compiled_rows))
        if index == 1 and not args.no_inference:  # after the two rows the goals compare, before the rest
            for name, strategy in INFERENCE_ROWS.items():
                attempt("inference", name, lambda s=strategy: inference_row(s, args, bool(compiled_rows)))
    print_tables(result)
    print(f"wrote {out}")
    return result
