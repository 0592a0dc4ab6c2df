"""Parameters and inference GMACs of every strategy on an image model you name, built on the meta device.

    adaptkit cost vit_base_patch16_clip_224
    adaptkit cost vit_large_patch14_clip_224 --frames 16 --classes 174 --views 6
    adaptkit cost ViT-B-16 --source open_clip
    adaptkit cost swin_base_patch4_window7_224 --strategy aim ratio=0.125

No weights are downloaded and no memory is used: shapes only. GMACs are multiply-accumulates, the unit the AIM paper
calls "GFLOPs" (``adaptkit.count_flops``); ``benchmarks/costs.py`` compares such rows with the paper's tables.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

import adaptkit
from recipes._args import ArgumentParser, UsageError


def parse_args(argv: list[str] | None, prog: str = "adaptkit cost") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("model", help="timm model name (e.g. vit_base_patch16_clip_224) or open_clip name")
    parser.add_argument("options", nargs="*", help="strategy options key=value (with --strategy), e.g. ratio=0.125")
    parser.add_argument("--source", choices=["timm", "open_clip"], default="timm")
    parser.add_argument("--strategy", help="one strategy (default: every registered strategy)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip T (default 8)")
    parser.add_argument("--classes", type=int, default=400, help="classes of the new head (default 400)")
    parser.add_argument("--views", type=int, default=3, help="test views per video (default 3)")
    parser.add_argument("--image-size", type=int, help="frame side (default: the model's input size)")
    args = parser.parse_intermixed_args(argv)
    if args.options and not args.strategy:
        raise UsageError("strategy options need --strategy (options differ between strategies)")
    return args


def meta_image_model(name: str, source: str) -> nn.Module:
    """The named image model with every tensor on the meta device (no weights, no memory)."""
    if source == "open_clip":
        import open_clip

        if name not in open_clip.list_models():
            close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
            raise ValueError(f"open_clip has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                    else ""))
        with torch.device("meta"):
            return open_clip.create_model(name).visual
    import timm

    architecture = name.partition(".")[0]
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        raise ValueError(f"timm has no model {architecture!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                   else " (`--source open_clip` for open_clip names)"))
    with torch.device("meta"):
        return timm.create_model(architecture, pretrained=False)


def input_size(image_model: nn.Module) -> int:
    cfg = getattr(image_model, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        return int(cfg["input_size"][-1])
    size = getattr(image_model, "image_size", 224)  # open_clip's visual tower
    return int(size[-1] if isinstance(size, (tuple, list)) else size)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Print the table; returns its rows (strategy, total / tunable parameters, GMACs per view and per video)."""
    args = parse_args(argv)
    options = OmegaConf.to_container(OmegaConf.from_dotlist(args.options)) if args.options else {}
    strategies = [args.strategy] if args.strategy else adaptkit.list_strategies()
    if args.strategy and args.strategy not in adaptkit.list_strategies():
        raise ValueError(f"unknown strategy {args.strategy!r}; registered: {adaptkit.list_strategies()}")
    size = args.image_size or input_size(meta_image_model(args.model, args.source))
    rows: list[dict[str, Any]] = []
    print(f"{args.model} ({args.source}), {args.frames} frames of {size}x{size}, {args.classes} classes, "
          f"{args.views} views; GMACs = the AIM paper's \"GFLOPs\"")
    print(f"| strategy | params (M) | tunable (M) | GMACs / view | GMACs x {args.views} views |")
    print("|---|---|---|---|---|")
    for strategy in strategies:
        image_model = meta_image_model(args.model, args.source)
        try:
            video_model = adaptkit.inject(image_model, strategy, num_frames=args.frames, num_classes=args.classes,
                                          **(options if args.strategy else {}))
        except (TypeError, ValueError) as error:
            if args.strategy:
                raise
            print(f"| {strategy} | not for this model: {' '.join(str(error).split())} | | | |")
            continue
        total, tunable = adaptkit.count_parameters(video_model)
        per_view = adaptkit.count_flops(video_model, image_size=size, views=1)
        rows.append({"strategy": strategy, "params": total, "tunable": tunable, "gmacs_per_view": per_view,
                     "gmacs_per_video": per_view * args.views})
        print(f"| {strategy} | {total / 1e6:.2f} | {tunable / 1e6:.3f} | {per_view:.1f} | {per_view * args.views:.1f} |")
    return rows


if __name__ == "__main__":  # python -m recipes.cost: the same as `adaptkit cost`
    from recipes.cli import main as cli

    raise SystemExit(cli(["cost", *sys.argv[1:]]))
