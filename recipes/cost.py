"""Parameters and inference GMACs of every strategy on an image model you name, built on the meta device.

    adaptkit cost vit_base_patch16_clip_224
    adaptkit cost vit_large_patch14_clip_224 --frames 16 --classes 174 --views 6
    adaptkit cost ViT-B-16 --source open_clip
    adaptkit cost swin_base_patch4_window7_224 --strategy aim ratio=0.125
    adaptkit cost vit_large_patch14_clip_224 --image-size 336   # the model built for 336 px frames
    adaptkit cost --config ssv2_vitl14_32f            # a config's model, strategy, frames, classes and test views

No weights are downloaded and no memory is used: shapes only. A strategy that merges into the frozen weights
(``zero-i2v``) also gets a ``merged`` row: its cost when deployed. GMACs are multiply-accumulates, the unit the AIM paper
calls "GFLOPs" (``adaptkit.count_flops``); ``benchmarks/costs.py`` compares such rows with the paper's tables.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

import adaptkit
from adaptkit.backbones import find_family
from recipes._args import ArgumentParser, UsageError
from recipes._builders import _open_clip_weights_follow, check_model_name


def parse_args(argv: list[str] | None, prog: str = "adaptkit cost") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="timm model name (e.g. vit_base_patch16_clip_224) or open_clip name")
    parser.add_argument("options", nargs="*", help="strategy options key=value (with --strategy), e.g. ratio=0.125; "
                        "with --config, config overrides, e.g. model.strategy=st-adapter data.num_frames=16")
    parser.add_argument("--config", help="a config name or YAML: its model, strategy and options, frames, classes, "
                        "test crop size and views (frames x clips x crops), with overrides; the flags are then not "
                        "taken")
    parser.add_argument("--source", choices=["timm", "open_clip"], help="the model name's library (default timm)")
    parser.add_argument("--strategy", help="one strategy (default: every registered strategy)")
    parser.add_argument("--frames", type=int, help="frames per clip T (default 8)")
    parser.add_argument("--classes", type=int, help="classes of the new head (default 400)")
    parser.add_argument("--views", type=int, help="test views per video (default 3)")
    parser.add_argument("--image-size", type=int, help="frame side; the model is built for it (timm img_size=, "
                        "open_clip force_image_size=; default: the model's own input size)")
    args = parser.parse_intermixed_args(argv)
    if args.config is not None:  # the positionals are the config's overrides (key=value)
        args.overrides = [*([args.model] if args.model is not None else []), *args.options]
        args.model, args.options = None, []
    given = [flag for flag, value in (("a model name", args.model), ("strategy options", args.options),
                                      ("--strategy", args.strategy), ("--image-size", args.image_size),
                                      ("--source", args.source), ("--frames", args.frames),
                                      ("--classes", args.classes), ("--views", args.views)) if value is not None
             and value != []]
    if args.config is not None:
        if given:
            raise UsageError(f"--config names the model, strategy and sizes: drop {', '.join(given)} (or the config; "
                             "change them with overrides such as model.strategy=lora data.num_frames=16)")
        return args
    for key, default in (("source", "timm"), ("frames", 8), ("classes", 400), ("views", 3)):
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.model is None:
        raise UsageError("name an image model (e.g. vit_base_patch16_clip_224) or give --config")
    if args.options and not args.strategy:
        raise UsageError("strategy options need --strategy (options differ between strategies)")
    return args


def from_config(args: argparse.Namespace) -> argparse.Namespace:
    """The arguments a config stands for: its model, strategy and options, frames, classes, crop and test views."""
    from recipes._config import load_config, strategy_options

    config = load_config(args.config, args.overrides)
    views = config.eval.num_clips * config.data.augment.test_crops
    return argparse.Namespace(
        model=config.model.name, source=config.model.source, kwargs=dict(config.model.kwargs),
        strategy=config.model.strategy, options=strategy_options(config.model), frames=config.data.num_frames,
        classes=config.data.num_classes or 400, views=views, image_size=config.data.augment.crop_size,
        title=f"config {config.name}: {config.data.num_frames}x{config.eval.num_clips}x"
              f"{config.data.augment.test_crops} views")


def meta_image_model(name: str, source: str, kwargs: dict[str, Any] | None = None,
                     image_size: int | None = None) -> nn.Module:
    """The named image model with every tensor on the meta device (no weights, no memory).

    ``image_size``: build it for frames of that side (as the paper's 336 px models are: a longer position embedding),
    through timm's ``img_size`` or open_clip's ``force_image_size``; None keeps the model's own.
    """
    check_model_name(name, source)
    kwargs = dict(kwargs or {})
    if source == "open_clip":
        import open_clip

        if image_size is not None:
            kwargs["force_image_size"] = image_size
        # device= too: open_clip moves the model to it, which a meta tensor cannot leave
        with torch.device("meta"), _open_clip_weights_follow():
            return open_clip.create_model(name, device="meta", **kwargs).visual
    import timm

    if image_size is not None:
        kwargs["img_size"] = image_size
    with torch.device("meta"):
        return timm.create_model(name.partition(".")[0], pretrained=False, **kwargs)


def input_size(image_model: nn.Module) -> int:
    """The frame side the model was built for (224 where no family takes it: inject then says why)."""
    try:
        size = find_family(image_model).input_size()
    except TypeError:
        return 224
    return 224 if size is None else size[-1]


def _row(name: str, video_model: nn.Module, size: int, views: int) -> dict[str, Any]:
    total, tunable = adaptkit.count_parameters(video_model)
    per_view = adaptkit.count_flops(video_model, image_size=size, views=1)
    return {"strategy": name, "params": total, "tunable": tunable, "gmacs_per_view": per_view,
            "gmacs_per_video": per_view * views}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Print the table; returns its rows (strategy, total / tunable parameters, GMACs per view and per video).

    A strategy that can be merged into the frozen weights (``zero-i2v``) gets a second row, ``<strategy> merged``:
    what it costs when deployed. Strategies the model does not take are listed as such; a model no strategy takes
    (e.g. a CNN) is an error.
    """
    args = parse_args(argv)
    if args.config is not None:
        args = from_config(args)
    for flag, value in (("--frames", args.frames), ("--classes", args.classes), ("--views", args.views),
                        ("--image-size", args.image_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    if isinstance(args.options, dict):  # from a config
        options = args.options
    else:
        options = OmegaConf.to_container(OmegaConf.from_dotlist(args.options)) if args.options else {}
    strategies = [args.strategy] if args.strategy else adaptkit.list_strategies()
    if args.strategy and args.strategy not in adaptkit.list_strategies():
        raise ValueError(f"unknown strategy {args.strategy!r}; registered: {adaptkit.list_strategies()}")
    from_flags = getattr(args, "title", None) is None  # a config's model is built as training builds it
    meta_model = meta_image_model(args.model, args.source, getattr(args, "kwargs", None),
                                  args.image_size if from_flags else None)
    size = args.image_size if args.image_size is not None else input_size(meta_model)
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    refused: list[Exception] = []
    for strategy in strategies:  # every row first: an error leaves no half table behind
        image_model = copy.deepcopy(meta_model)  # inject rebuilds the model's blocks in place
        try:
            video_model = adaptkit.inject(image_model, strategy, num_frames=args.frames, num_classes=args.classes,
                                          **(options if args.strategy else {}))
        except (TypeError, ValueError) as error:
            if args.strategy:
                raise
            refused.append(error)
            lines.append(f"| {strategy} | not for this model: {' '.join(str(error).split())} | | | |")
            continue
        found = [_row(strategy, video_model, size, args.views)]
        try:
            video_model.merge()  # on the meta device: folds the shapes, nothing to check
            found.append(_row(f"{strategy} merged", video_model, size, args.views))
        except TypeError:
            pass  # not a mergeable strategy
        rows += found
        lines += [f"| {r['strategy']} | {r['params'] / 1e6:.2f} | {r['tunable'] / 1e6:.3f} | "
                  f"{r['gmacs_per_view']:.1f} | {r['gmacs_per_video']:.1f} |" for r in found]
    if not rows:  # the model itself, not one strategy, is the problem
        raise refused[0]
    views = getattr(args, "title", f"{args.views} views")
    print(f"{args.model} ({args.source}), {args.frames} frames of {size}x{size}, {args.classes} classes, "
          f"{views}; GMACs = the AIM paper's \"GFLOPs\"")
    print(f"| strategy | params (M) | tunable (M) | GMACs / view | GMACs x {args.views} views |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":  # python -m recipes.cost: the same as `adaptkit cost`
    from recipes.cli import main as cli

    raise SystemExit(cli(["cost", *sys.argv[1:]]))
