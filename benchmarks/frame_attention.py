"""Attention over frames alone: the Triton kernels' two designs and tile sizes against the PyTorch paths.

    python -m benchmarks.frame_attention --device cuda     # ~1 min; benchmarks/results/frame_attention_cuda.json

AIM's temporal attention at the issue's setting by default: 16 clips x 8 frames x 197 tokens, ViT-B
heads (12 x 64), bf16, packed q/k/v (B, T, N, 3, heads, d) as the fused projection writes them. Rows:

- ``pytorch regrouped``: copy q/k/v into (B*N, T) sequences, ``scaled_dot_product_attention``, copy the
  output back frame-folded (the CPU path, and the GPU path before the kernels);
- ``pytorch strided``: ``scaled_dot_product_attention`` on strided (B, N, heads, T, d) views;
- ``per-frame`` and ``tiled`` kernels (:mod:`adaptkit.layers.frame_attention_triton`), each at several tile
  sizes (``block_rows`` token positions x frames per program) and warp counts; the first of each is the default.

Each row reports the forward and forward + backward time (median of CUDA-event-timed calls), the bytes
the operation must move at least (q/k/v in, output and log-sum-exp out; backward: q/k/v, output
gradient and log-sum-exp in, q/k/v gradients out), that traffic's rate, and its share of the card's
copy bandwidth measured here (a 1 GiB device-to-device copy). Every row's output and gradients are
checked against the float64 PyTorch path first; its largest error is reported, and a row that is
wrong is marked so rather than timed.

Without CUDA (``--device cpu``) only the PyTorch rows run, at a small size: a dry run of the script. With
``TRITON_INTERPRET=1`` set, the kernel rows run too, through Triton's interpreter (correct, and very slow).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from adaptkit.layers import frame_attention_reference
from benchmarks._cli import ArgumentParser, non_negative_int, positive_int
from benchmarks._results import RESULTS, describe_device, write_json

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 3e-3, torch.float32: 1e-4}
"""Largest error vs float64 allowed (relative to the largest reference value) before a row counts as wrong."""
# (kernel, block_rows, num_warps); 0 = the kernel's own choice, listed first.
KERNEL_ROWS = [("per-frame", 0, 0), ("per-frame", 16, 2), ("per-frame", 64, 4), ("per-frame", 64, 8),
               ("tiled", 0, 0), ("tiled", 16, 4), ("tiled", 64, 4), ("tiled", 64, 8), ("tiled", 128, 8)]


def pytorch_regrouped(packed: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """(B, T, N, 3, heads, d) -> (B, T, N, heads, d) through contiguous (B*N, T) sequences."""
    batch, frames = packed.shape[:2]
    # (B, T, N, 3, heads, d) -> 3 x (B*N, heads, T, d), copied
    q, k, v = rearrange(packed, "b t n c h d -> c (b n) h t d").contiguous().unbind(0)
    mask = None if bias is None else bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return rearrange(out, "(b n) h t d -> b t n h d", b=batch).contiguous()  # frame-folded, copied


def implementations(device: str) -> dict[str, Callable]:
    rows: dict[str, Callable] = {
        "pytorch regrouped": pytorch_regrouped,
        "pytorch strided": lambda packed, bias, scale: frame_attention_reference(packed, bias, scale),
    }
    if device.startswith("cuda") or os.environ.get("TRITON_INTERPRET") == "1":
        from adaptkit.layers import frame_attention_triton

        for kernel, block_rows, num_warps in KERNEL_ROWS:
            label = kernel if not block_rows else f"{kernel} rows={block_rows} warps={num_warps}"
            rows[label] = (lambda packed, bias, scale, k=kernel, r=block_rows, w=num_warps:
                           frame_attention_triton.frame_attention(packed, bias, scale, k, block_rows=r, num_warps=w))
    return rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str, size_bytes: int) -> float:
    """Measured device-to-device copy rate in bytes/s (bytes read plus bytes written)."""
    src = torch.empty(size_bytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, 3, 10)
    return 2 * src.numel() * 4 / (ms / 1e3)


def minimum_bytes(shape: tuple[int, ...], element: int) -> dict[str, int]:
    """Bytes the forward and the backward must move at least (a bias, (heads, T, T), is negligible)."""
    batch, frames, tokens, _, heads, head_dim = shape
    values = batch * frames * tokens * heads * head_dim  # one of q, k, v or the output
    lse = batch * frames * tokens * heads * 4
    forward = 3 * values * element + values * element + lse
    backward = 3 * values * element + values * element + lse + 3 * values * element
    return {"forward": forward, "forward_backward": forward + backward}


def largest_error(fn: Callable, packed: torch.Tensor, bias: torch.Tensor | None, scale: float) -> float:
    """Largest error of the output and of every gradient vs float64, relative to each one's largest value."""
    inputs = [packed] + ([bias] if bias is not None else [])
    weights = torch.randn(packed.shape[:3] + packed.shape[4:], device=packed.device)
    out = fn(packed, bias, scale)
    grads = torch.autograd.grad((out.float() * weights).sum(), inputs)
    exact_inputs = [t.detach().double().requires_grad_(True) for t in inputs]
    exact_bias = exact_inputs[1] if bias is not None else None
    exact = frame_attention_reference(exact_inputs[0], exact_bias, scale)
    exact_grads = torch.autograd.grad((exact * weights.double()).sum(), exact_inputs)
    errors = []
    for value, reference in zip([out, *grads], [exact, *exact_grads], strict=True):
        errors.append(((value.double() - reference).abs().max() / reference.abs().max().clamp(min=1e-12)).item())
    return max(errors)


def measure(args: argparse.Namespace) -> dict:
    device, dtype = args.device, DTYPES[args.dtype]
    generator = torch.Generator(device).manual_seed(0)
    shape = (args.batch, args.frames, args.tokens, 3, args.heads, args.head_dim)
    # The fused projection's output, (B*T, N, 3*heads*d), viewed packed: q/k/v interleaved per token.
    packed = torch.randn(shape, device=device, generator=generator).to(dtype).requires_grad_(True)
    bias = (torch.randn(args.heads, args.frames, args.frames, device=device, generator=generator)
            .requires_grad_(True) if args.bias else None)
    scale = args.head_dim**-0.5
    grad_out = torch.randn(shape[:3] + shape[4:], device=device, dtype=dtype, generator=generator)
    inputs = [packed] + ([bias] if bias is not None else [])
    bandwidth = copy_bandwidth(device, args.copy_mib * 2**20)
    traffic = minimum_bytes(shape, packed.element_size())
    rows: dict[str, dict] = {}
    for label, fn in implementations(device).items():
        start = time.perf_counter()
        try:
            error = largest_error(fn, packed, bias, scale)
            row: dict = {"max_rel_error_vs_fp64": float(f"{error:.3g}")}
            if not error <= TOLERANCE[dtype]:
                row["wrong"] = True  # not timed: a fast wrong kernel is no result
            else:
                with torch.no_grad():
                    row["forward_ms"] = round(median_ms(lambda f=fn: f(packed, bias, scale), device, args.warmup,
                                                        args.repeats), 4)

                def forward_backward(f: Callable = fn) -> None:
                    torch.autograd.grad(f(packed, bias, scale), inputs, grad_out)

                row["forward_backward_ms"] = round(median_ms(forward_backward, device, args.warmup, args.repeats), 4)
                for kind in ("forward", "forward_backward"):
                    rate = traffic[kind] / (row[f"{kind}_ms"] / 1e3)
                    row[f"{kind}_gb_per_s"] = round(rate / 1e9, 1)
                    row[f"{kind}_share_of_copy_bandwidth"] = round(rate / bandwidth, 3)
        except Exception as error:  # one failing row (a kernel that does not compile) must not lose the others
            row = {"error": f"{type(error).__name__}: {error}"[:400]}
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows[label] = row
        print(f"{label}: {json.dumps(row)}", flush=True)
    return {
        "environment": {"device": describe_device(device), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "torch": torch.__version__},
        "setting": {"packed_shape": list(shape), "dtype": args.dtype, "bias": args.bias,
                    "repeats": args.repeats, "timing": "median, CUDA events" if device.startswith("cuda") else
                    "median, wall clock"},
        "copy_bandwidth_gb_per_s": round(bandwidth / 1e9, 1),
        "minimum_bytes": traffic,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    setting = result["setting"]
    print(f"\n{result['environment']['device']}, {result['environment']['date']}: packed q/k/v "
          f"{tuple(setting['packed_shape'])} {setting['dtype']}, bias {setting['bias']}; copy bandwidth "
          f"{result['copy_bandwidth_gb_per_s']} GB/s")
    print(f"{'row':32s} {'fwd ms':>8s} {'fwd+bwd ms':>10s} {'fwd+bwd GB/s':>12s} {'of copy':>7s} {'rel err':>8s}")
    for label, row in result["rows"].items():
        if "error" in row or row.get("wrong"):
            print(f"{label:32s} {row.get('error') or 'WRONG: error ' + str(row['max_rel_error_vs_fp64'])}")
            continue
        print(f"{label:32s} {row['forward_ms']:>8.3f} {row['forward_backward_ms']:>10.3f} "
              f"{row['forward_backward_gb_per_s']:>12.1f} {100 * row['forward_backward_share_of_copy_bandwidth']:>6.1f}% "
              f"{row['max_rel_error_vs_fp64']:>8.2g}")


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=positive_int, default=None, help="clips (CUDA default 16, CPU 2)")
    parser.add_argument("--frames", type=positive_int, default=8)
    parser.add_argument("--tokens", type=positive_int, default=None,
                        help="token positions per frame (CUDA default 197, CPU 50)")
    parser.add_argument("--heads", type=positive_int, default=12)
    parser.add_argument("--head-dim", type=positive_int, default=64)
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="CUDA default bf16, CPU fp32")
    parser.add_argument("--bias", action="store_true", help="a (heads, T, T) bias with a gradient, as Swin's")
    parser.add_argument("--repeats", type=positive_int, default=50)
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--copy-mib", type=positive_int, default=None,
                        help="size of the bandwidth copy (CUDA 1024, CPU 64)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default results/frame_attention_<device>.json)")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.exit(2, "benchmarks.frame_attention: no CUDA device (--device cpu runs the PyTorch rows only)\n")
    args.batch = args.batch or (16 if cuda else 2)
    args.tokens = args.tokens or (197 if cuda else 50)
    args.copy_mib = args.copy_mib or (1024 if cuda else 64)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    result = measure(args)
    print_table(result)
    out = args.out or RESULTS / f"frame_attention_{args.device.split(':')[0]}.json"
    write_json(result, out)
    return result


if __name__ == "__main__":
    main()
