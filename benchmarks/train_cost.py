"""Training cost of each strategy, side by side: memory at paper scale (meta device) and step time (measured).

    python -m benchmarks.train_cost                  # CPU: writes benchmarks/results/train_cost.json
    python -m benchmarks.train_cost --device cuda    # GPU protocol: benchmarks/results/train_cost_cuda.json

CPU protocol. Memory (paper scale, ViT-B/16 or ``--model``, 224x224, 8 frames): bytes of activations autograd
saves for backward, counted exactly without running anything (:mod:`benchmarks.saved_memory`), plus
weights, gradients and AdamW state; twice: fp32 on the meta device with 8 clips per device as in the
paper (a real CPU run at 112x112 agrees within 2%, the gap being the attention kernel), and as a
CUDA bf16-autocast step with fused attention kernels keeps them, with 16 clips (the GPU protocol's
setting). Step time: forward + backward + AdamW step, median of interleaved runs in one process,
reported as ratios to the fully finetuned space-only baseline and of AIM to AIM without its
temporal branch (never as absolute promises: the CPU is shared and compute-bound). Inference:
clips/s of AIM and of the plain image model (``linear-probe``) at the same batch, eager, as a ratio.

GPU protocol (``--device cuda``, :mod:`benchmarks.train_cost_gpu`): step time eager and compiled
under bf16 autocast with fused AdamW, peak memory, FLOPs per step, the card's measured matmul rate
and MFU, clips/s, and an inference table; see that module.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import timm
import torch

import adaptkit
from adaptkit.layers import set_frame_attention_kernel
from benchmarks._cli import ArgumentParser, check_timm_model, positive_int
from benchmarks.saved_memory import saved_tensors
from benchmarks._results import RESULTS, describe_device, write_json

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row: a strategy with options, a gradient-checkpointing mode, and how attention over frames runs on CUDA."""

    label: str
    strategy: str
    options: dict = dataclasses.field(default_factory=dict)
    checkpointing: bool | str = False
    frame_kernel: str = "per-frame"


SETTINGS = {
    s.label: s
    for s in [
        Setting("aim", "aim"),
        Setting("aim temporal=False", "aim", {"temporal": False}),
        Setting("space-only", "space-only"),
        Setting("timesformer", "timesformer"),
        Setting("linear-probe", "linear-probe"),
        Setting("lora", "lora"),
        Setting("aim checkpointing=none", "aim", checkpointing="none"),
        Setting("aim checkpointing=temporal", "aim", checkpointing="temporal"),
        Setting("aim checkpointing=True", "aim", checkpointing=True),
        Setting("aim kernel=tiled", "aim", frame_kernel="tiled"),
        Setting("aim kernel=pytorch", "aim", frame_kernel="pytorch"),
    ]
}
CPU_ROWS = ["linear-probe", "space-only", "lora", "aim", "aim checkpointing=none", "aim temporal=False", "timesformer"]
DEFAULT_MODEL = "vit_base_patch16_clip_224"
MEMORY_ROWS = ["linear-probe", "space-only", "lora", "aim", "aim checkpointing=none", "aim checkpointing=temporal",
               "aim checkpointing=True", "timesformer"]


def build(setting: Setting, device: str, image_size: int, frames: int,
          model: str = DEFAULT_MODEL) -> adaptkit.VideoModel:
    """A seeded ViT with random weights, injected per ``setting``, in train mode.

    Also sets the process-wide attention-over-frames implementation to the row's (CUDA only; CPUs always
    take the PyTorch path).
    """
    set_frame_attention_kernel(setting.frame_kernel)
    torch.manual_seed(0)
    with torch.device(device):
        image_model = timm.create_model(model, img_size=image_size)
    video_model = adaptkit.inject(image_model, setting.strategy, num_frames=frames, num_classes=400, **setting.options)
    video_model.set_grad_checkpointing(setting.checkpointing)
    return video_model.train()


def saved_activation_bytes(video_model: torch.nn.Module, batch: int, frames: int, device: str = "cpu") -> int:
    """Bytes of storages autograd keeps for backward in one forward pass of a meta-device model.

    ``device="cpu"``: fp32 on meta; ``"gpu"``: a CUDA bf16-autocast step (see :mod:`benchmarks.saved_memory`).
    """
    return sum(entry[0] for entry in saved_tensors(video_model, batch, frames, device=device))


def state_bytes(video_model: torch.nn.Module) -> int:
    """fp32 weights for everything, plus gradient and two AdamW moments for what trains."""
    total, trainable = adaptkit.count_parameters(video_model)
    return 4 * total + 12 * trainable


def paper_scale_memory(device: str = "cpu", batch: int = 8, frames: int = 8,
                       model: str = DEFAULT_MODEL) -> dict[str, dict[str, float]]:
    rows = {}
    for label in MEMORY_ROWS:
        vm = build(SETTINGS[label], "meta", 224, frames, model)
        activations = saved_activation_bytes(vm, batch, frames, device)
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


def step_times(device: str, image_size: int, frames: int, batch: int, repeats: int,
               rows: list[str] = CPU_ROWS, model: str = DEFAULT_MODEL) -> dict[str, dict[str, float]]:
    models = {label: build(SETTINGS[label], device, image_size, frames, model) for label in rows}
    optimizers = {label: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for label, m in models.items()}
    video = torch.randn(batch, 3, frames, image_size, image_size, device=device)
    labels = torch.randint(0, 400, (batch,), device=device)
    times: dict[str, list[float]] = {label: [] for label in rows}
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

    def ratio(median: float, reference: str) -> float | None:
        return round(median / medians[reference], 3) if reference in medians else None

    return {
        label: {"median_s": round(median, 3), "vs_space_only": ratio(median, "space-only"),
                "vs_aim_temporal_false": ratio(median, "aim temporal=False")}
        for label, median in medians.items()
    }


def inference_clips_per_s(device: str, image_size: int, frames: int, batch: int, repeats: int,
                          model: str = DEFAULT_MODEL) -> dict[str, float]:
    """Eager inference clips/s of AIM and of the plain image model (``linear-probe``), interleaved."""
    models = {name: build(SETTINGS[label], device, image_size, frames, model).eval()
              for name, label in (("aim", "aim"), ("image model", "linear-probe"))}
    video = torch.randn(batch, 3, frames, image_size, image_size, device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for round_index in range(repeats + 1):
            for name, vm in models.items():
                start = time.perf_counter()
                vm(video)
                if round_index:
                    times[name].append(time.perf_counter() - start)
    clips = {name: batch / statistics.median(t) for name, t in times.items()}
    return {"batch": batch, "image_size": image_size, "aim_clips_per_s": round(clips["aim"], 2),
            "image_model_clips_per_s": round(clips["image model"], 2),
            "aim_vs_image_model": round(clips["aim"] / clips["image model"], 3)}


def cpu_report(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    memory = {"cpu": paper_scale_memory("cpu", batch=8, model=args.model),
              "gpu": paper_scale_memory("gpu", batch=16, model=args.model)}
    for kind, title in (("cpu", "fp32, meta device, 8 clips"), ("gpu", "as a CUDA bf16-autocast step keeps them, 16 clips")):
        print(f"Training memory per device, {args.model} 224x224, 8 frames ({title}):")
        for label, row in memory[kind].items():
            print(f"  {label:27s} activations {row['activations_gib']:6.2f} GiB + states "
                  f"{row['weights_grads_adamw_gib']:5.2f} GiB = {row['total_gib']:6.2f} GiB  "
                  f"({row['vs_timesformer']:.3f} x timesformer)")

    rows = args.rows.split(",") if args.rows else CPU_ROWS
    timing = step_times(args.device, args.image_size, args.frames, args.batch, args.repeats, rows, args.model)
    device_name = describe_device(args.device)
    print(f"Training step, {args.model} {args.image_size}x{args.image_size}, {args.frames} frames, batch {args.batch} "
          f"on {device_name}:")
    for label, row in timing.items():
        print(f"  {label:24s} {row['median_s']:7.3f} s  ({row['vs_space_only']} x space-only, "
              f"{row['vs_aim_temporal_false']} x aim temporal=False)")
    inference = inference_clips_per_s(args.device, args.image_size, args.frames, args.inference_batch, args.repeats,
                                      args.model)
    print(f"Inference, batch {args.inference_batch}, eager: aim {inference['aim_clips_per_s']} clips/s, image model "
          f"{inference['image_model_clips_per_s']} clips/s ({inference['aim_vs_image_model']} x)")

    result = {
        "environment": {"torch": torch.__version__, "timm": timm.__version__, "device": device_name,
                        "date": time.strftime("%Y-%m-%d"), "note": "shared machine: ratios only"},
        "model": args.model,
        "memory_paper_scale": memory["cpu"],
        "memory_paper_scale_gpu_model": memory["gpu"],
        "memory_settings": {"memory_paper_scale": "fp32 counted on the meta device, 8 clips of 8x224x224",
                            "memory_paper_scale_gpu_model": "a CUDA bf16-autocast step modelled on the meta device, "
                                                            "16 clips of 8x224x224"},
        "step_time": {"image_size": args.image_size, "frames": args.frames, "batch": args.batch,
                      "repeats": args.repeats, "rows": timing},
        "inference": inference,
    }
    out = args.out or RESULTS / "train_cost.json"
    write_json(result, out)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="timm model name (random weights; default ViT-B/16 CLIP)")
    parser.add_argument("--protocol", choices=["ratios", "gpu"], default=None,
                        help="ratios (default on CPU) or gpu (default on CUDA; on CPU a dry run)")
    parser.add_argument("--image-size", type=positive_int, default=None, help="frame size (CPU default 112, GPU 224)")
    parser.add_argument("--frames", type=positive_int, default=8)
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="clips per training step (CPU default 1, GPU 16)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="CPU: timed rounds")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--rows", default=None, help="comma-separated training rows (default: all of the protocol's)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU: torch threads (default: torch's)")
    parser.add_argument("--inference-batch", type=positive_int, default=None,
                        help="clips per inference call (CPU default 8, GPU 32)")
    args, rest = parser.parse_known_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device (cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device (--device cpu --protocol gpu runs a "
                     f"dry run of the GPU protocol)")
    gpu_protocol = (args.protocol or ("gpu" if device.type == "cuda" else "ratios")) == "gpu"
    check_timm_model(parser, args.model, args.image_size or (224 if gpu_protocol else 112))
    if gpu_protocol:
        from benchmarks import train_cost_gpu

        return train_cost_gpu.main(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    unknown = [row for row in (args.rows or "").split(",") if row and row not in SETTINGS]
    if unknown:  # before the minutes the memory tables take
        parser.error(f"unknown rows {unknown}; choose from {list(SETTINGS)}")
    args.image_size = 112 if args.image_size is None else args.image_size
    args.batch = 1 if args.batch is None else args.batch
    args.inference_batch = 8 if args.inference_batch is None else args.inference_batch
    return cpu_report(args)


if __name__ == "__main__":
    main()
