"""Evaluate a trained video model with multi-view testing (temporal clips x spatial crops).

    adaptkit evaluate --checkpoint runs/synthetic_motion/final
    adaptkit evaluate --checkpoint runs/k400_vitb16_8x16/final eval.num_clips=3 data.augment.test_crops=3
    adaptkit evaluate --checkpoint runs/k400_vitb16_8x16/final data.val.annotations=k400/test.csv
    adaptkit evaluate --checkpoint my_adapter --config k400_vitb16_8x16    # a plain save_pretrained folder
    torchrun --nproc_per_node 8 -m recipes.evaluate --checkpoint runs/k400_vitb16_8x16/final

The checkpoint folder is a run's ``final/`` or ``checkpoints/step_<N>/``: it holds the adapter, the config the model
was trained with (used unless ``--config`` is given; overrides apply on top) and the class names (a plain
``save_pretrained`` folder has neither: ``--config`` is then required and the classes come from the annotations).
The strategy and its options are the folder's own (its ``adapter_config.json``): an override of ``model.strategy`` or
``model.options`` that differs from them is refused.
A video's score is the mean of the softmax over its views. The result, with the list of evaluated video ids
(validation sets differ between dataset copies), is written to ``<checkpoint>/eval_result.json`` unless ``--output`` says otherwise.
An earlier result there of other data or other views is kept: this one then gets a name of its own,
``eval_result_<annotations stem>_<views>.json``; a re-run of the same evaluation replaces it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from adaptkit.data import EvaluationResult
from recipes._args import ArgumentParser
from recipes._builders import check_crop_size, describe_backbone
from recipes._checkpoint import (
    CONFIG_FILE,
    check_model_dir,
    load_image_model,
    load_model_dir,
    read_classes,
    refuse_option_overrides,
    refuse_strategy_overrides,
)
from recipes._config import load_config
from recipes._data import eval_dataset
from recipes._distributed import setup, teardown
from recipes._embedded import prepare_everywhere
from recipes._evaluation import evaluate, format_result, format_skipped
from recipes._logging import setup_logging


def parse_args(argv: list[str] | None, prog: str = "adaptkit evaluate") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="model folder (a run's final/ or a checkpoint)")
    parser.add_argument("--config", help="config name or YAML (default: the one saved with the checkpoint)")
    parser.add_argument("--output", type=Path, help="result JSON (default: <checkpoint>/eval_result.json)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. eval.num_clips=3")
    return parser.parse_intermixed_args(argv)


def check_output(output: Path | None, checkpoint: Path) -> Path:
    """The result file: ``--output`` or ``<checkpoint>/eval_result.json``, its folder made and writable.

    Raises:
        ValueError: the path is a folder, or its folder cannot be made or written to.
    """
    flag = "--output" if output is not None else "the default result file (choose another with --output)"
    output = output if output is not None else checkpoint / "eval_result.json"
    if output.is_dir():
        raise ValueError(f"{flag} {output} is a folder; give a file path, e.g. {output / 'eval_result.json'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {output}: cannot make its folder: {error.strerror}") from None
    if not os.access(output.parent, os.W_OK):
        raise ValueError(f"{flag} {output}: its folder is not writable")
    return output


def default_output(checkpoint: Path, annotations: str, views: str) -> Path:
    """``<checkpoint>/eval_result.json``, unless it holds an evaluation of other data or views, which is kept: then
    ``eval_result_<annotations stem>_<views>.json`` (``views``: frames x temporal clips x spatial crops)."""
    output = checkpoint / "eval_result.json"
    try:
        previous = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: nothing to keep
        return output
    if not isinstance(previous, dict) or (
            previous.get("views") == views and (previous.get("extra") or {}).get("annotations") == annotations):
        return output
    return checkpoint / f"eval_result_{Path(annotations).stem or 'data'}_{views}.json"


def main(argv: list[str] | None = None) -> EvaluationResult | None:
    """Evaluate; returns the result on the main process (None on the others)."""
    args = parse_args(argv)
    check_model_dir(args.checkpoint, config_given=args.config is not None)
    refuse_strategy_overrides(args.checkpoint, args.overrides)  # the model folder's, not the config's
    config = load_config(args.config or args.checkpoint / CONFIG_FILE, list(args.overrides))
    refuse_option_overrides(args.checkpoint, config, args.overrides)
    output = check_output(args.output, args.checkpoint)  # before minutes of evaluation, not after
    world = setup(config.train.device, datetime.timedelta(minutes=config.train.dist_timeout_min))
    try:
        setup_logging(world.is_main)
        config = prepare_everywhere(config, world)  # a config of generated data / a pretrained embedded backbone
        saved_classes = read_classes(args.checkpoint)  # None for a plain save_pretrained folder
        dataset, views, data_classes = eval_dataset(config, saved_classes)

        # The backbone comes from the config's weights (or the run's saved random backbone), the adapter from the
        # checkpoint; from_pretrained checks that both match.
        image_model, weights = load_image_model(config.model, args.checkpoint, args.config is not None)
        model = load_model_dir(image_model, args.checkpoint, args.config is not None, weights).to(world.device)
        check_crop_size(model, config.data.augment.crop_size)
        num_classes = model.num_classes
        if data_classes != num_classes:  # labels past the head would silently count as errors
            raise ValueError(f"the evaluation data has {data_classes} classes but {args.checkpoint}'s head has "
                             f"{num_classes}: evaluate it on data with the classes it was trained on")
        if world.is_main:
            print(f"{args.checkpoint}: {describe_backbone(model)} ({weights}), strategy {model.strategy_name}, "
                  f"{num_classes} classes, views {views}, {len(dataset)} videos")

        bf16 = config.train.precision == "bf16" or (config.train.precision == "auto" and world.device.type == "cuda")
        num_workers = config.data.num_workers if config.eval.num_workers is None else config.eval.num_workers
        result = evaluate(model, dataset, world, model.normalization, views, config.eval.batch_size,
                          config.eval.chunk_size, num_workers, bf16=bf16,
                          pin_memory=config.data.decode_device == "cpu")
        if result is None:
            return None
        annotations = str(config.data.val.annotations or config.data.source)
        result.extra.update(checkpoint=str(args.checkpoint), model=config.model.name, annotations=annotations)
        if args.output is None:
            output = default_output(args.checkpoint, annotations, result.views)
        result.to_json(output)
        print(format_result(result, num_classes))
        print(f"evaluation data: {format_skipped(result)}")
        print(f"result and evaluated video ids: {output}")
        return result
    finally:
        teardown()


if __name__ == "__main__":  # python -m recipes.evaluate: the same as `adaptkit evaluate`
    from recipes.cli import main as cli

    raise SystemExit(cli(["evaluate", *sys.argv[1:]]))
