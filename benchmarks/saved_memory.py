"""What autograd keeps for the backward pass, counted exactly at paper scale without running anything.

    # AIM, TimeSformer, space-only: totals and where AIM's bytes go (printed, and written to
    # benchmarks/results/saved_memory.json; --out elsewhere)
    python -m benchmarks.saved_memory
    python -m benchmarks.saved_memory --rows aim --top 30   # one row, longer breakdown
    python -m benchmarks.saved_memory --model vit_large_patch14_clip_224 --frames 16   # another timm model

Two counts, both on tensors without data (nothing is computed, nothing allocated):

- ``cpu``: fp32 on the meta device. Attention runs as PyTorch's unfused math path there (it keeps
  the attention weights), and AIM's temporal branch takes its CPU path (tokens regrouped).
- ``gpu``: what a CUDA training step keeps, modelled with fake CUDA tensors: bf16 autocast, AIM's
  temporal attention through its Triton kernel's autograd (q/k/v and a log-sum-exp), and spatial
  attention as the fused flash / memory-efficient kernels (q/k/v, output, log-sum-exp). On an
  H200 this count plus weights, gradients and AdamW state came 0.1-1.0 GiB below the measured peak
  (1.9 GiB with whole blocks checkpointed): the rest is the backward pass's transient buffers (see
  benchmarks/README.md, "Training cost").

Views of one storage are counted once, and parameters (kept by linear layers for their input
gradient) are left out: they are counted with the weights.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import adaptkit
from benchmarks._cli import ArgumentParser, check_timm_model, non_negative_int, positive_int
from benchmarks._results import RESULTS, write_json

GIB = 2**30


class _FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as the fused CUDA kernels a GPU would pick (what they keep for backward)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        mask, scale = kwargs.get("attn_mask"), kwargs.get("scale")
        if mask is None and not kwargs.get("dropout_p"):
            return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[0]
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, mask, True, kwargs.get("dropout_p", 0.0), scale=scale)[0]


@contextlib.contextmanager
def _gpu_like(dtype: torch.dtype) -> Iterator[None]:
    """Fake CUDA tensors, CUDA autocast to ``dtype`` and fused attention (works without a GPU)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    previous = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    with FakeTensorMode(allow_non_fake_inputs=True), _FusedAttention():
        # torch.autocast("cuda") refuses without a GPU; the dispatcher's switch does not.
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", dtype)
        try:
            yield
        finally:
            torch.set_autocast_enabled("cuda", previous[0])
            torch.set_autocast_dtype("cuda", previous[1])


def build_meta(strategy: str, options: dict, checkpointing: bool | str, frames: int = 8,
               model: str = "vit_base_patch16_clip_224", image_size: int = 224) -> adaptkit.VideoModel:
    """A paper-size video model on the meta device, in train mode, for ``image_size`` x ``image_size`` frames."""
    with torch.device("meta"):
        image_model = timm.create_model(model, img_size=image_size)
    video_model = adaptkit.inject(image_model, strategy, num_frames=frames, num_classes=400, **options)
    video_model.set_grad_checkpointing(checkpointing)
    return video_model.train()


def saved_tensors(video_model: torch.nn.Module, batch: int, frames: int = 8, image_size: int = 224,
                  device: str = "cpu") -> list[tuple[int, str, str, tuple[int, ...], torch.dtype]]:
    """(bytes, module, autograd node, shape, dtype) of each storage one training forward pass keeps.

    ``video_model`` lives on the meta device. ``device="cpu"`` counts fp32 on meta; ``"gpu"`` models
    a CUDA bf16-autocast step (see the module docstring). The module is the innermost one running
    when the storage was first saved, with block indices replaced by ``*``.
    """
    names = {module: name for name, module in video_model.named_modules()}
    stack: list[str] = []
    hooks = [h for module in video_model.modules() for h in (
        module.register_forward_pre_hook(lambda m, args: stack.append(names[m])),
        module.register_forward_hook(lambda m, args, out: stack.pop() and None),
    )]
    kept: dict[int, tuple] = {}
    context = _gpu_like(torch.bfloat16) if device == "gpu" else contextlib.nullcontext()
    try:
        with context:
            if device == "gpu":
                video_model = video_model.to_empty(device="cuda")
            params = {p.untyped_storage()._cdata for p in video_model.parameters()}
            video = torch.empty(batch, 3, frames, image_size, image_size, device="cuda" if device == "gpu" else "meta")

            def pack(t: torch.Tensor) -> torch.Tensor:
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in params and key not in kept:
                    module = re.sub(r"\.\d+(?=\.|$)", ".*", stack[-1] if stack else "")
                    # The tensor itself is held too, so that no other storage reuses its id meanwhile.
                    kept[key] = (t, storage.nbytes(), module, type(t.grad_fn).__name__, tuple(t.shape), t.dtype)
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                video_model(video)
    finally:
        for hook in hooks:
            hook.remove()
    return [entry[1:] for entry in kept.values()]


def breakdown(saved: list[tuple], top: int) -> list[tuple[float, int, str, str, str]]:
    """The largest (GiB, storages, module, autograd node, dtype) groups."""
    size: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for nbytes, module, node, _, dtype in saved:
        key = (module, node, str(dtype).removeprefix("torch."))
        size[key] += nbytes
        count[key] += 1
    return [(round(total / GIB, 3), count[key], *key) for key, total in size.most_common(top)]


ROWS = {
    "aim": ("aim", {}, False),
    "aim checkpointing=none": ("aim", {}, "none"),
    "aim checkpointing=temporal": ("aim", {}, "temporal"),
    "aim temporal=False": ("aim", {"temporal": False}, False),
    "space-only": ("space-only", {}, False),
    "timesformer": ("timesformer", {}, False),
}


COUNTED_AS = {"cpu": "cpu fp32 step", "gpu": "modelled CUDA bf16-autocast step"}
"""What ``--device`` counts: nothing runs on either device (see the module docstring)."""


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="aim,aim checkpointing=none,timesformer,space-only")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="clips (default 8 for cpu, 16 for gpu: the settings of benchmarks/README.md's two tables)")
    parser.add_argument("--top", type=non_negative_int, default=12, help="breakdown lines per row (0: none)")
    parser.add_argument("--model", default="vit_base_patch16_clip_224", help="timm model name (default ViT-B/16 CLIP)")
    parser.add_argument("--frames", type=positive_int, default=8)
    parser.add_argument("--image-size", type=positive_int, default=224, help="frame size")
    parser.add_argument("--out", type=Path, default=RESULTS / "saved_memory.json", help="JSON file to write")
    args = parser.parse_args(argv)
    unknown = [row for row in args.rows.split(",") if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    check_timm_model(parser, args.model, args.image_size)
    batch = args.batch or (16 if args.device == "gpu" else 8)
    result = {}
    for label in args.rows.split(","):
        strategy, options, checkpointing = ROWS[label]
        vm = build_meta(strategy, options, checkpointing, args.frames, args.model, args.image_size)
        saved = saved_tensors(vm, batch, args.frames, args.image_size, device=args.device)
        total, trainable = adaptkit.count_parameters(vm)
        result[label] = {"saved_gib": round(sum(s[0] for s in saved) / GIB, 2),
                         "weights_grads_adamw_gib": round((4 * total + 12 * trainable) / GIB, 2),
                         "breakdown": breakdown(saved, args.top)}
        print(f"{label}: {result[label]['saved_gib']} GiB kept for backward + "
              f"{result[label]['weights_grads_adamw_gib']} GiB weights, grads, AdamW ({args.model}, "
              f"{COUNTED_AS[args.device]}, {batch} clips of {args.frames}x{args.image_size}^2)")
        for gib, count, module, node, dtype in result[label]["breakdown"]:
            print(f"  {gib:7.3f} GiB {count:4d} x  {module:45s} {node:42s} {dtype}")
    write_json({"environment": {"device": f"meta (counts only): {COUNTED_AS[args.device]}"},
                "settings": {"model": args.model, "clips": batch, "frames": args.frames, "image_size": args.image_size},
                "rows": result}, args.out)
    return result


if __name__ == "__main__":
    main()
