"""Registers, spills and occupancy of the frame-attention kernels, compiled offline for a GPU: no GPU needed.

    python -m benchmarks.kernel_resources              # sm_90 (H100/H200), ~1 min on 2 cores
    python -m benchmarks.kernel_resources --arch 80    # A100

For each kernel design (:data:`adaptkit.layers.frame_attention_triton.KERNELS`), with and without a bias,
at AIM's shapes (12 heads of 64 with 8, 16 and 32 frames; 16 heads of 128 for ViT-H-like widths) and at
the tile sizes ``benchmarks.frame_attention`` sweeps, the forward and backward launches are built exactly
as the ops build them (``forward_launch`` / ``backward_launch`` on meta tensors), specialised as Triton's
JIT specialises a launch (argument alignment, arguments equal to 1), compiled to a cubin by the ``ptxas``
Triton ships, and read with its ``cuobjdump``. Per launch:

- registers per thread, and bytes of stack with the number of spill loads and stores in the SASS (the
  cost of register pressure: local memory traffic);
- shared memory per program;
- the occupancy bound those allow: resident warps per SM out of 64 (Hopper and Ampere: 64K registers,
  allocated per warp in units of 256; 228 KiB (sm_90) or 164 KiB (sm_80) of shared memory).

This is what can be known about the kernels' speed without a GPU: a kernel bound by memory traffic, as
these are, needs enough resident warps to keep loads in flight, and must not spill. It does not replace
timing them (``benchmarks.frame_attention --device cuda``).
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget

from adaptkit.layers import frame_attention_kernels, frame_attention_triton
from benchmarks._cli import ArgumentParser
from benchmarks._results import RESULTS, write_json

SHAPES = [(8, 12, 64), (16, 12, 64), (32, 12, 64), (8, 16, 128)]  # (frames, heads, head_dim)
"""AIM's temporal attention at 8, 16 and 32 frames (ViT-B/L heads of 64), and heads of 128."""
SHARED_PER_SM = {90: 228 * 1024, 80: 164 * 1024}


def _triton_internals():  # noqa: ANN202
    """The pieces of Triton's JIT that specialise and compile a launch (they moved between Triton releases)."""
    try:
        from triton.compiler import ASTSource, make_backend
        from triton.runtime.jit import create_function_from_signature
    except ImportError as error:
        raise SystemExit(f"benchmarks.kernel_resources: Triton {triton.__version__} lacks {error.name}; "
                         "it needs Triton 3.4 or newer") from None
    return ASTSource, make_backend, create_function_from_signature


def compile_launch(launch: frame_attention_triton.Launch, target: GPUTarget):  # noqa: ANN201
    """Compile one launch for ``target`` as Triton's JIT would on that GPU; returns the compiled kernel."""
    ast_source, make_backend, create_binder = _triton_internals()
    fn = getattr(frame_attention_kernels, launch.kernel)
    backend = make_backend(target)
    binder = create_binder(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.options)
    options, signature, constexprs, attrs = fn._pack_args(backend, dict(launch.options), bound_args, specialization,
                                                          options)
    return triton.compile(ast_source(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def resources(compiled, arch: int) -> dict:  # noqa: ANN001
    """Registers, stack, spill instructions, shared memory and the occupancy bound of a compiled kernel."""
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([str(tools / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)", usage)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource usage: {usage[-300:]}")
    registers, stack, _ = map(int, match.groups())
    shared = compiled.metadata.shared
    warps = compiled.metadata.num_warps
    per_warp = math.ceil(registers * 32 / 256) * 256  # registers are allocated per warp, 256 at a time
    programs = min(65536 // (per_warp * warps), SHARED_PER_SM[arch] // max(shared, 1), 32)
    return {
        "registers": registers,
        "stack_bytes": stack,
        "spill_instructions": len(re.findall(r"\b(?:LDL|STL)\b", sass)),
        "shared_bytes": shared,
        "num_warps": warps,
        "resident_warps_per_sm": min(64, programs * warps),
    }


def launches(kernel: str, frames: int, heads: int, head_dim: int, bias: bool, block_rows: int, num_warps: int):  # noqa: ANN201
    """The forward and backward launches for one clip batch of meta tensors (16 clips of 197 tokens, bf16)."""
    packed = torch.empty(16, frames, 197, 3, heads, head_dim, device="meta", dtype=torch.bfloat16)
    bias_tensor = torch.empty(heads, frames, frames, device="meta") if bias else None
    forward, out, lse = frame_attention_triton.forward_launch(packed, bias_tensor, head_dim**-0.5, kernel,
                                                              block_rows, num_warps)
    backward, _, _ = frame_attention_triton.backward_launch(torch.empty_like(out), packed, bias_tensor, lse,
                                                            head_dim**-0.5, kernel, block_rows, num_warps)
    return {"forward": forward, "backward": backward}


def configurations(sweep: bool) -> list[tuple]:
    rows = []
    for frames, heads, head_dim in SHAPES:
        for kernel in frame_attention_triton.KERNELS:
            for bias in (False, True):
                rows.append((kernel, frames, heads, head_dim, bias, 0, 0))
    if sweep:  # the tile sizes benchmarks.frame_attention times, at the shape
        from benchmarks.frame_attention import KERNEL_ROWS

        for kernel, block_rows, num_warps in KERNEL_ROWS:
            if block_rows:
                rows.append((kernel, 8, 12, 64, False, block_rows, num_warps))
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--arch", type=int, choices=sorted(SHARED_PER_SM), default=90, help="compute capability x10")
    parser.add_argument("--no-sweep", action="store_true", help="only the default tile sizes")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default results/kernel_resources_sm<arch>.json)")
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    rows = []
    print(f"{'kernel':10s} {'T':>3s} {'h x d':>7s} {'bias':>5s} {'tile':>14s} {'pass':>8s} {'regs':>5s} "
          f"{'spills':>6s} {'smem':>6s} {'warps/SM':>8s}")
    for kernel, frames, heads, head_dim, bias, block_rows, num_warps in configurations(not args.no_sweep):
        for direction, launch in launches(kernel, frames, heads, head_dim, bias, block_rows, num_warps).items():
            row = {"kernel": kernel, "frames": frames, "heads": heads, "head_dim": head_dim, "bias": bias,
                   "block_rows": block_rows or "default", "pass": direction,
                   "tile": [launch.options["BLOCK_N"], launch.options["BLOCK_T"], launch.options["BLOCK_D"]]}
            row.update(resources(compile_launch(launch, target), args.arch))
            rows.append(row)
            tile = "x".join(map(str, row["tile"])) + f" w{row['num_warps']}"
            print(f"{kernel:10s} {frames:>3d} {heads:>2d}x{head_dim:<4d} {str(bias):>5s} {tile:>14s} {direction:>8s} "
                  f"{row['registers']:>5d} {row['spill_instructions']:>6d} {row['shared_bytes']:>6d} "
                  f"{row['resident_warps_per_sm']:>8d}", flush=True)
    result = {
        "environment": {"target": f"sm_{args.arch}", "triton": triton.__version__, "torch": torch.__version__,
                        "date": time.strftime("%Y-%m-%d")},
        "setting": "16 clips x 197 tokens, bf16; tile = token positions x frames x channels, w = warps",
        "rows": rows,
    }
    out = args.out or RESULTS / f"kernel_resources_sm{args.arch}.json"
    write_json(result, out)
    return result


if __name__ == "__main__":
    main()
