"""Where a training step's GPU time goes: a torch.profiler table of the top kernels.

    python -m benchmarks.profile_step --device cuda                  # compiled AIM step, ViT-B/16, 8x224^2, 16 clips, bf16
    python -m benchmarks.profile_step --device cpu --image-size 32 --batch 1 --no-compile   # a dry run of the code

The step is the GPU protocol's (:mod:`benchmarks.train_cost_gpu`): bf16 autocast, fused AdamW. After
warm-up (which compiles), ``--steps`` steps run under ``torch.profiler``; the table lists the
``--top`` kernels by total device time (CPU time on a CPU dry run) and is written next to the JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks._cli import ArgumentParser, non_negative_int, positive_int
from benchmarks.train_cost import RESULTS, SETTINGS, build


def main(argv: list[str] | None = None) -> str:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--row", default="aim", choices=list(SETTINGS))
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("--frames", type=positive_int, default=8)
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--steps", type=positive_int, default=3)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--top", type=non_negative_int, default=15)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_step.txt")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.exit(2, "benchmarks.profile_step: no CUDA device (use --device cpu for a dry run)\n")

    vm = build(SETTINGS[args.row], args.device, args.image_size, args.frames)
    optimizer = torch.optim.AdamW([p for p in vm.parameters() if p.requires_grad], lr=1e-4, fused=cuda)
    model = vm if args.no_compile else torch.compile(vm)
    video = torch.randn(args.batch, 3, args.frames, args.image_size, args.image_size, device=args.device)
    labels = torch.randint(0, 400, (args.batch,), device=args.device)

    def step() -> None:
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
            loss = F.cross_entropy(model(video).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    title = (f"{args.row}, {'eager' if args.no_compile else 'compiled'}, {args.device}, {args.frames}x"
             f"{args.image_size}^2, {args.batch} clips, bf16 autocast; {args.steps} steps; top {args.top} by {sort_by}")
    table = title + "\n" + prof.key_averages().table(sort_by=sort_by, row_limit=args.top, max_name_column_width=70)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(table)
    return table


if __name__ == "__main__":
    main()
