"""Training cost of each strategy, side by side: memory at paper scale (meta device) and step time (measured).

    python -m benchmarks.train_cost                  # CPU: writes benchmarks/results/train_cost.json
    python -m benchmarks.train_cost --device cuda    # GPU protocol: benchmarks/results/train_cost_cuda.json

CPU protocol. Memory (paper scale, ViT-B/16, 224x224, 8 frames, 8 clips per device as in the
paper): bytes of activations autograd saves for backward (counted exactly on the meta device; a
real CPU run at 112x112 agrees within 2%, the gap being the attention kernel), plus weights,
gradients and AdamW state. Step time: forward + backward + AdamW step, median of interleaved runs
in one process, reported as ratios to the fully finetuned space-only baseline and of AIM to AIM
without its temporal branch (never as absolute promises: the CPU is shared and compute-bound).

GPU protocol (``--device cuda``, :mod:`benchmarks.train_cost_gpu`): step time eager and compiled
under bf16 autocast with fused AdamW, peak memory, FLOPs per step, the card's measured matmul rate
and MFU, clips/s, and an inference table; see that module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import timm
import torch

import adaptkit

GIB = 2**30
RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row: a strategy with options, and a gradient-checkpointing mode."""

    label: str
    strategy: str
    options: dict = dataclasses.field(default_factory=dict)
    checkpointing: bool | str = False


SETTINGS = {
    s.label: s
    for s in [
        Setting("aim", "aim"),
        Setting("aim temporal=False", "aim", {"temporal": False}),
        Setting("space-only", "space-only"),
        Setting("timesformer", "timesformer"),
        Setting("linear-probe", "linear-probe"),
        Setting("lora", "lora"),
        Setting("aim checkpointing=temporal", "aim", checkpointing="temporal"),
        Setting("aim checkpointing=True", "aim", checkpointing=True),
    ]
}
CPU_ROWS = ["linear-probe", "space-only", "lora", "aim", "aim temporal=False", "timesformer"]
MEMORY_ROWS = ["linear-probe", "space-only", "lora", "aim", "aim checkpointing=temporal", "aim checkpointing=True",
               "timesformer"]


def build(setting: Setting, device: str, image_size: int, frames: int,
          model: str = "vit_base_patch16_clip_224") -> adaptkit.VideoModel:
    """A seeded ViT with random weights, injected per ``setting``, in train mode."""
    torch.manual_seed(0)
    with torch.device(device):
        image_model = timm.create_model(model, img_size=image_size)
    video_model = adaptkit.inject(image_model, setting.strategy, num_frames=frames, num_classes=400, **setting.options)
    video_model.set_grad_checkpointing(setting.checkpointing)
    return video_model.train()


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
    for label in MEMORY_ROWS:
        vm = build(SETTINGS[label], "meta", 224, frames)
        video = torch.empty(batch, 3, frames, 224, 224, device="meta")
        activations = saved_activation_bytes(vm, video)
        states = state_bytes(vm)
        rows[label] = {
            "activations_gib": round(activations / GIB, 2),
            "weights_grads_adamw_gib": round(states / GIB, 2),
            "total_gib": round((activations + states) / GIB, 2),
        }
    reference = rows["timesformer"]["total_gib"]
    for row in rows.values():
        row["vs_timesformer"] = round(row["total_gib"] / reference, 3)
    return rows


def step_times(device: str, image_size: int, frames: int, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    models = {label: build(SETTINGS[label], device, image_size, frames) for label in CPU_ROWS}
    optimizers = {label: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for label, m in models.items()}
    video = torch.randn(batch, 3, frames, image_size, image_size, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    times: dict[str, list[float]] = {label: [] for label in CPU_ROWS}
    for round_index in range(repeats + 1):  # round 0 warms up; rows interleave so drift hits all alike
        for label, vm in models.items():
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(vm(video), labels)
            loss.backward()
            optimizers[label].step()
            optimizers[label].zero_grad(set_to_none=True)
            if round_index:
                times[label].append(time.perf_counter() - start)
    medians = {label: statistics.median(t) for label, t in times.items()}
    return {
        label: {"median_s": round(median, 3), "vs_space_only": round(median / medians["space-only"], 3),
                "vs_aim_temporal_false": round(median / medians["aim temporal=False"], 3)}
        for label, median in medians.items()
    }


def cpu_report(args: argparse.Namespace) -> dict:
    memory = paper_scale_memory()
    print("Training memory per device, ViT-B/16 224x224, 8 frames, 8 clips (meta-device count):")
    for label, row in memory.items():
        print(f"  {label:27s} activations {row['activations_gib']:6.2f} GiB + states "
              f"{row['weights_grads_adamw_gib']:5.2f} GiB = {row['total_gib']:6.2f} GiB  "
              f"({row['vs_timesformer']:.2f} x timesformer)")

    timing = step_times(args.device, args.image_size, args.frames, args.batch, args.repeats)
    device_name = f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"Training step, ViT-B/16 {args.image_size}x{args.image_size}, {args.frames} frames, batch {args.batch} "
          f"on {device_name}:")
    for label, row in timing.items():
        print(f"  {label:20s} {row['median_s']:7.3f} s  ({row['vs_space_only']:.2f} x space-only, "
              f"{row['vs_aim_temporal_false']:.2f} x aim temporal=False)")

    result = {
        "environment": {"torch": torch.__version__, "timm": timm.__version__, "device": device_name,
                        "date": time.strftime("%Y-%m-%d")},
        "memory_paper_scale": memory,
        "step_time": {"image_size": args.image_size, "frames": args.frames, "batch": args.batch,
                      "repeats": args.repeats, "rows": timing},
    }
    out = args.out or RESULTS / "train_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--protocol", choices=["ratios", "gpu"], default=None,
                        help="ratios (default on CPU) or gpu (default on CUDA; on CPU a dry run)")
    parser.add_argument("--image-size", type=int, default=None, help="frame size (CPU default 112, GPU 224)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=None, help="clips per training step (CPU default 1, GPU 16)")
    parser.add_argument("--repeats", type=int, default=3, help="CPU: timed rounds")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args, rest = parser.parse_known_args(argv)
    if (args.protocol or ("gpu" if args.device.startswith("cuda") else "ratios")) == "gpu":
        from benchmarks import train_cost_gpu

        return train_cost_gpu.main(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.image_size = args.image_size or 112
    args.batch = args.batch or 1
    return cpu_report(args)


if __name__ == "__main__":
    main()
