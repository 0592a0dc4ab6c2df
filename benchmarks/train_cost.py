"""Training cost of each strategy, side by side: memory at paper scale (meta device) and step time (measured).

    python -m benchmarks.train_cost                  # writes benchmarks/results/train_cost.json
    python -m benchmarks.train_cost --device cuda    # step time and peak memory on a GPU

Memory (paper scale, ViT-B/16, 224x224, 8 frames, 8 clips per device as in the paper): bytes of
activations autograd saves for backward (counted exactly on the meta device; a real CPU run at
112x112 agrees within 2%, the gap being the attention kernel), plus weights, gradients and AdamW
state. Step time: forward + backward + AdamW step, median of interleaved runs in one process,
reported as ratios to the fully finetuned space-only baseline (never as absolute promises).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import timm
import torch

import adaptkit

STRATEGIES = ["linear-probe", "space-only", "lora", "aim", "timesformer"]
GIB = 2**30


def build(strategy: str, device: str, image_size: int, frames: int) -> adaptkit.VideoModel:
    torch.manual_seed(0)
    with torch.device(device):
        image_model = timm.create_model("vit_base_patch16_clip_224", img_size=image_size)
    return adaptkit.inject(image_model, strategy, num_frames=frames, num_classes=400).train()


def saved_activation_bytes(video_model: torch.nn.Module, video: torch.Tensor) -> int:
    """Bytes of tensors autograd keeps for backward in one forward pass (views counted once)."""
    kept: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t if t._base is None else t._base
        kept[id(base)] = (base, base.numel() * base.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        video_model(video)
    return sum(size for _, size in kept.values())


def state_bytes(video_model: torch.nn.Module) -> int:
    """fp32 weights for everything, plus gradient and two AdamW moments for what trains."""
    total, trainable = adaptkit.count_parameters(video_model)
    return 4 * total + 12 * trainable


def paper_scale_memory(batch: int = 8, frames: int = 8) -> dict[str, dict[str, float]]:
    rows = {}
    for strategy in STRATEGIES:
        vm = build(strategy, "meta", 224, frames)
        video = torch.empty(batch, 3, frames, 224, 224, device="meta")
        activations = saved_activation_bytes(vm, video)
        states = state_bytes(vm)
        rows[strategy] = {
            "activations_gib": round(activations / GIB, 2),
            "weights_grads_adamw_gib": round(states / GIB, 2),
            "total_gib": round((activations + states) / GIB, 2),
        }
    reference = rows["timesformer"]["total_gib"]
    for row in rows.values():
        row["vs_timesformer"] = round(row["total_gib"] / reference, 3)
    return rows


def step_times(device: str, image_size: int, frames: int, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    models = {s: build(s, device, image_size, frames) for s in STRATEGIES}
    optimizers = {s: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for s, m in models.items()}
    video = torch.randn(batch, 3, frames, image_size, image_size, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    peaks: dict[str, int] = {}
    for round_index in range(repeats + 1):  # round 0 warms up; strategies interleave so drift hits all alike
        for strategy, vm in models.items():
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(vm(video), labels)
            loss.backward()
            optimizers[strategy].step()
            optimizers[strategy].zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
                peaks[strategy] = torch.cuda.max_memory_allocated()
            if round_index:
                times[strategy].append(time.perf_counter() - start)
    reference = statistics.median(times["space-only"])
    rows = {}
    for strategy in STRATEGIES:
        median = statistics.median(times[strategy])
        rows[strategy] = {"median_s": round(median, 3), "vs_space_only": round(median / reference, 3)}
        if strategy in peaks:
            rows[strategy]["peak_gib"] = round(peaks[strategy] / GIB, 2)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=112, help="frame size for the timed runs")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_cost.json")
    args = parser.parse_args(argv)

    memory = paper_scale_memory()
    print("Training memory per device, ViT-B/16 224x224, 8 frames, 8 clips (meta-device count):")
    for strategy, row in memory.items():
        print(f"  {strategy:13s} activations {row['activations_gib']:6.2f} GiB + states {row['weights_grads_adamw_gib']:5.2f}"
              f" GiB = {row['total_gib']:6.2f} GiB  ({row['vs_timesformer']:.2f} x timesformer)")

    timing = step_times(args.device, args.image_size, args.frames, args.batch, args.repeats)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"Training step, ViT-B/16 {args.image_size}x{args.image_size}, {args.frames} frames, batch {args.batch} on {device_name}:")
    for strategy, row in timing.items():
        extra = f", peak {row['peak_gib']} GiB" if "peak_gib" in row else ""
        print(f"  {strategy:13s} {row['median_s']:7.3f} s  ({row['vs_space_only']:.2f} x space-only{extra})")

    result = {
        "environment": {"torch": torch.__version__, "timm": timm.__version__, "device": device_name},
        "memory_paper_scale": memory,
        "step_time": {"image_size": args.image_size, "frames": args.frames, "batch": args.batch,
                      "repeats": args.repeats, "rows": timing},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
