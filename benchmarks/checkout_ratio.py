"""Step-time ratio of two training rows, for two checkouts of adaptkit, measured interleaved.

    git worktree add /tmp/before 90f81cf^        # adaptkit before the fast temporal path (issue 7)
    taskset -c 1 python -m benchmarks.checkout_ratio /tmp/before .   # writes benchmarks/results/checkout_ratio.json

One worker process per checkout imports that checkout's adaptkit (its folder first on sys.path),
builds ``aim`` and ``aim temporal=False`` (ViT-B/16 CLIP architecture, random weights, 112x112, 8
frames, batch 1, one thread), counts the FLOPs of one forward + backward (``FlopCounterMode``) and
times one forward + backward + AdamW step on request. The parent
asks the workers in turn, row after row, so that load on a shared machine hits every measurement
alike, and reports per checkout the median ratio aim / aim temporal=False.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks._cli import ArgumentParser, positive_int
from benchmarks._results import RESULTS, describe_device, write_json

ROWS = {"aim": {}, "aim temporal=False": {"temporal": False}}

WORKER = r"""
import sys, time, json
sys.path.insert(0, sys.argv[1])
import timm, torch, adaptkit
assert adaptkit.__file__.startswith(sys.argv[1]), adaptkit.__file__
torch.set_num_threads(1)
torch.set_flush_denormal(sys.argv[4] == "1")
size, frames = int(sys.argv[2]), 8
rows = json.loads(sys.argv[3])
models, optimizers = {}, {}
for label, options in rows.items():
    torch.manual_seed(0)
    vm = adaptkit.inject(timm.create_model("vit_base_patch16_clip_224", img_size=size), "aim", num_frames=frames,
                         num_classes=400, **options).train()
    models[label] = vm
    optimizers[label] = torch.optim.AdamW([p for p in vm.parameters() if p.requires_grad], lr=1e-4)
video = torch.randn(1, 3, frames, size, size)
labels = torch.zeros(1, dtype=torch.long)
from torch.utils.flop_counter import FlopCounterMode
flops = {}
for label, vm in models.items():  # one counted forward + backward per row (FLOPs of the step, recomputation included)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(vm(video), labels).backward()
    flops[label] = counter.get_total_flops()
    optimizers[label].zero_grad(set_to_none=True)
print(json.dumps(flops), flush=True)
print("ready", flush=True)
for line in sys.stdin:
    label = line.strip()
    start = time.perf_counter()
    torch.nn.functional.cross_entropy(models[label](video), labels).backward()
    optimizers[label].step()
    optimizers[label].zero_grad(set_to_none=True)
    print(time.perf_counter() - start, flush=True)
"""


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("checkouts", nargs=2, type=Path, help="two adaptkit checkouts (repository roots)")
    parser.add_argument("--image-size", type=positive_int, default=112)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--out", type=Path, default=RESULTS / "checkout_ratio.json", help="JSON file to write")
    parser.add_argument("--flush-denormal", action="store_true", help="treat denormal floats as zero (CPU)")
    args = parser.parse_args(argv)
    workers = {}
    for checkout in args.checkouts:
        root = str(checkout.resolve())
        workers[root] = subprocess.Popen([sys.executable, "-c", WORKER, root, str(args.image_size), json.dumps(ROWS),
                                          "1" if args.flush_denormal else "0"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
    flops = {root: json.loads(worker.stdout.readline()) for root, worker in workers.items()}
    for worker in workers.values():
        assert worker.stdout.readline().strip() == "ready"
    times: dict[str, dict[str, list[float]]] = {root: {label: [] for label in ROWS} for root in workers}
    for round_index in range(args.repeats + 1):
        for label in ROWS:
            for root, worker in workers.items():
                worker.stdin.write(label + "\n")
                worker.stdin.flush()
                seconds = float(worker.stdout.readline())
                if round_index:
                    times[root][label].append(seconds)
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    result = {"image_size": args.image_size, "frames": 8, "batch": 1, "threads": 1, "repeats": args.repeats,
              "flush_denormal": args.flush_denormal, "checkouts": {}}
    for root, rows in times.items():
        medians = {label: statistics.median(t) for label, t in rows.items()}
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        ratio = medians["aim"] / medians["aim temporal=False"]
        flop_ratio = flops[root]["aim"] / flops[root]["aim temporal=False"]
        result["checkouts"][root] = {"commit": commit, "median_s": {k: round(v, 3) for k, v in medians.items()},
                                     "aim_vs_temporal_false": round(ratio, 3), "flops_per_step": flops[root],
                                     "flop_ratio": round(flop_ratio, 3)}
        print(f"{root} ({commit}): aim {medians['aim']:.3f} s, aim temporal=False "
              f"{medians['aim temporal=False']:.3f} s, ratio {ratio:.3f} (FLOP ratio {flop_ratio:.3f})")
    cpu = describe_device("cpu").split(",")[0]
    write_json({"environment": {"device": f"{cpu}, one thread per worker"}, **result}, args.out)
    return result


if __name__ == "__main__":
    main()
