"""Train a video classifier from a pretrained image transformer (AIM by default).

    adaptkit train                                      # the default config: no data, no download
    adaptkit train --config k400_vitb16_8x16            # a shipped config by name (`adaptkit ls`) or a YAML path
    adaptkit train --config k400_vitb16_8x16 optim.lr=1e-4 data.batch_size=4
    adaptkit train --config k400_vitb16_8x16 --resume   # after an interruption
    torchrun --nproc_per_node 8 -m recipes.train --config k400_vitb16_8x16

``python -m recipes.train`` is the same as ``adaptkit train``. :class:`TrainRecipe` runs its steps in this order,
each a method that can be called and tested on its own:

1. :meth:`~TrainRecipe.setup_data`: datasets, the step arithmetic (accumulation, steps per epoch), the loader;
2. :meth:`~TrainRecipe.setup_checkpoint`: the checkpoint to resume from, checked against this config;
3. :meth:`~TrainRecipe.setup_model`: the image backbone with its weights, then the video model;
4. :meth:`~TrainRecipe.setup_optimizer`: AdamW and the warmup-cosine schedule, with their resumed state;
5. :meth:`~TrainRecipe.start_run`: only now is the run folder written (``config.yaml``, logs), so a config that fails
   any check above leaves nothing behind;
6. :meth:`~TrainRecipe.train`: the loop, with checkpoints and periodic evaluation;
7. :meth:`~TrainRecipe.finish`: ``final/``, the last evaluation and ``train_summary.json``.

The run folder (``runs/<name>`` unless ``train.output_dir``) receives ``config.yaml``, ``metrics.jsonl`` /
``train.csv`` / ``eval.csv``, ``checkpoints/step_<N>/``, ``final/`` (adapter, config, class names; what
``adaptkit evaluate`` and ``adaptkit predict`` read), ``eval_result.json`` and ``train_summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import math
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import adaptkit
from adaptkit.data import BatchMixer, prepare_batch
from recipes._builders import (
    RANDOM_INIT,
    build_optimizer,
    build_scheduler,
    backbone_tensors,
    build_video_model,
    check_crop_size,
    create_image_model,
    describe_backbone,
    save_image_weights,
)
from recipes._checkpoint import (
    CONFIG_FILE,
    IMAGE_WEIGHTS_FILE,
    image_weights_in,
    list_checkpoints,
    load_checkpoint,
    model_config_differences,
    setting_differences,
    newest_intact_checkpoint,
    remove_unfinished_checkpoints,
    rng_state,
    save_checkpoint,
    save_model_dir,
    set_rng_state,
)
from recipes._args import ArgumentParser
from recipes._config import DEFAULT_CONFIG, ControlConfig, RecipeConfig, batch_size_fix, load_config, to_yaml
from recipes._data import ResumableSampler, eval_dataset, has_eval_data, train_dataset
from recipes._embedded import prepare_everywhere
from recipes._distributed import (
    PeerFailedError,
    World,
    all_gather_objects,
    any_rank,
    barrier,
    broadcast_object,
    setup,
    sum_over_ranks,
    teardown,
)
from recipes._evaluation import autocast, evaluate, format_result, format_skipped
from recipes._files import atomic_write_text
from recipes._interrupt import (
    FinalEvaluationInterrupted,
    StopAtOnce,
    StopSignals,
    TrainingInterrupted,
    ignore_stop_signals,
)
from recipes._logging import MetricLogger, setup_logging
from recipes._workers import stopping_workers

log = logging.getLogger("recipes.train")

Skip = tuple[str, str]  # (video path, reason)


class TrainingDiverged(RuntimeError):
    """The loss or the trainable weights stopped being finite: the run stops before it logs or saves them."""


def parse_args(argv: list[str] | None, prog: str = "adaptkit train") -> argparse.Namespace:
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--config", help=f"config name (`adaptkit ls`) or YAML path (default: {DEFAULT_CONFIG})")
    parser.add_argument("--resume", action="store_true", help="continue from the run's newest intact checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. optim.lr=1e-4")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the training summary (also written to ``<run>/train_summary.json``)."""
    args = parse_args(argv)
    config = load_config(args.config, list(args.overrides) + (["train.resume=true"] if args.resume else []))
    world = setup(config.train.device, datetime.timedelta(minutes=config.train.dist_timeout_min))
    try:  # a rank stopped by another's failure says so in the CLI (recipes._distributed.is_peer_failure)
        return run_with_controls(config, world)
    finally:
        teardown()


def control_config(config: RecipeConfig, control: ControlConfig) -> RecipeConfig:
    """``config`` with the control's strategy and options, in ``<run>/controls/<strategy>``, without controls."""
    changed = copy.deepcopy(config)
    changed.model.strategy, changed.model.options = control.strategy, dict(control.options)
    changed.train.output_dir = str(config.run_dir / "controls" / control.strategy)
    changed.name, changed.controls = f"{config.name}-{control.strategy}", []
    return changed


def run_with_controls(config: RecipeConfig, world: World) -> dict[str, Any]:
    """Prepare generated data / backbone if asked for, run the recipe, then every control of ``config.controls``
    trained and evaluated the same way; print the results side by side. Returns the main run's summary, with the
    controls' summaries under ``"controls"``."""
    config = prepare_everywhere(config, world)
    summary = TrainRecipe(config, world).run()
    if not config.controls or summary.get("stopped"):
        return summary
    controls = {}
    for control in config.controls:
        if world.is_main:
            print(f"\ncontrol: {control.strategy} on the same backbone, data and schedule")
        controls[control.strategy] = TrainRecipe(control_config(config, control), world).run()
    summary["controls"] = controls
    if world.is_main:
        print("\nresults on the held-out videos:")
        rows = [(f"{config.model.strategy} (this run)", summary)] + [(f"{name} (control)", s)
                                                                     for name, s in controls.items()]
        for label, result in rows:
            evaluation = result.get("eval")
            top1 = f"top-1 {100 * evaluation['top1']:.1f}%" if evaluation else "not evaluated"
            print(f"  {label:<28s} {top1}  ({result['wall_time_s']:.0f} s)")
    return summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def adapter_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the trainable tensors: equal on every rank when data parallelism kept them in sync."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def timed_batches(loader: DataLoader) -> Iterator[tuple[Any, float]]:
    """Yield ``(batch, seconds spent waiting for it)``: the wait is the loader's share of the step time."""
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
            return
        yield batch, time.perf_counter() - start


class TrainRecipe:
    """One training run of ``config`` on this process (one of ``world.world_size``). See the module docstring."""

    def __init__(self, config: RecipeConfig, world: World) -> None:
        self.config, self.world = config, world
        self.run_dir = config.run_dir
        self.started = time.perf_counter()
        setup_logging(world.is_main)  # process-wide state: recipes only, never the library
        if config.train.num_threads is not None:
            torch.set_num_threads(config.train.num_threads)
        if world.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        precision = config.train.precision
        self.bf16 = precision == "bf16" or (precision == "auto" and world.device.type == "cuda")
        self.step = 0
        self.saved_step: int | None = None  # the step of the last checkpoint this start wrote
        self.step_lr = 0.0  # the learning rate the last optimizer step used (the schedule has moved on since)
        self.checked_step = 0  # the last step known to have finite losses and weights
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=world.device)  # a loss since then was not finite
        # The open log window: the sum of its losses (a rank's; the mean over ranks once resumed) and its optimizer
        # steps. Checkpoints carry it, so a resumed run logs the same rows as an uninterrupted one.
        self.window_loss = torch.zeros((), dtype=torch.float64, device=world.device)
        self.window_steps = 0
        self.skipped_before: list[Skip] = []  # videos skipped before the checkpoint this run resumed from
        self.wall_time_before = 0.0  # seconds the run had taken up to the checkpoint it resumed from

    # ------------------------------------------------------------------------------------------ 1. data
    def setup_data(self) -> None:
        """Datasets, step arithmetic and the training sampler (the loader is made by :meth:`make_loader`).

        Raises:
            ValueError: the global batch is not a whole number of per-device batches, or the data holds less than
                one optimizer step.
        """
        config, world, tc = self.config, self.world, self.config.train
        self.train_set, self.classes, self.left_out = train_dataset(config)
        self.eval_set, self.views, _ = eval_dataset(config, self.classes) if has_eval_data(config) else (None, "", 0)
        per_step = config.data.batch_size * world.world_size
        self.accumulation = tc.global_batch_size // per_step
        if self.accumulation * per_step != tc.global_batch_size:
            fix = batch_size_fix(tc.global_batch_size, config.data.batch_size, world.world_size)
            raise ValueError(f"train.global_batch_size={tc.global_batch_size} is not a multiple of data.batch_size x "
                             f"processes = {config.data.batch_size} x {world.world_size}: {fix}")
        self.steps_per_epoch = len(self.train_set) // world.world_size // config.data.batch_size // self.accumulation
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training clips do not fill one step of {tc.global_batch_size} "
                             "clips (train.global_batch_size)")
        self.total_steps = tc.max_steps or tc.epochs * self.steps_per_epoch
        self.sampler = ResumableSampler(self.train_set, world, tc.seed,
                                        self.steps_per_epoch * self.accumulation * config.data.batch_size)

    def make_loader(self) -> DataLoader:
        """The training DataLoader over :attr:`sampler` (its workers start when the loop does)."""
        config, world, workers = self.config, self.world, self.config.data.num_workers
        return DataLoader(
            self.train_set, batch_size=config.data.batch_size, sampler=self.sampler, num_workers=workers,
            # Clips decoded on the GPU (data.decode_device=cuda) are already there: nothing to pin.
            pin_memory=world.device.type == "cuda" and config.data.decode_device == "cpu",
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(config.train.seed + world.rank),  # leaves the global RNG alone
            worker_init_fn=ignore_stop_signals if workers > 0 else None,
        )

    # ------------------------------------------------------------------------------------------ 2. checkpoint
    def setup_checkpoint(self) -> None:
        """Pick the checkpoint to resume from, or make sure a fresh start overwrites nothing. Writes no file.

        Resuming takes the newest *intact* checkpoint (every file matches its recorded digest; broken newer ones are
        named in a warning), and refuses one made with another model config or another step arithmetic.

        Raises:
            FileExistsError: a fresh start on a run folder that holds checkpoints, without ``train.overwrite``; an
                output folder that is a file, or that holds files but no run.
            ValueError: the checkpoint's model config or step counts differ from this config (the keys are named).
            recipes._files.CorruptFileError: every checkpoint of the run is broken.
        """
        config, tc = self.config, self.config.train
        self.checkpoint: Path | None = None
        self.resume_state: dict[str, Any] | None = None
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FileExistsError(f"train.output_dir {self.run_dir} is a file: a run needs a folder")
        # Hidden files (.DS_Store, .gitkeep) do not make a folder someone's data.
        foreign = sorted(path.name for path in self.run_dir.iterdir() if not path.name.startswith(".")) \
            if self.run_dir.is_dir() else []
        if foreign and not any((self.run_dir / name).exists() for name in (CONFIG_FILE, "metrics.jsonl", "checkpoints")):
            # Never write into (or clear) a folder of the user's, resuming or not: a dataset's train.csv would be
            # appended to or overwritten.
            raise FileExistsError(
                f"train.output_dir {self.run_dir} holds files that are not an adaptkit run "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose a new or empty folder"
            )
        if not tc.resume:
            existing = list_checkpoints(self.run_dir)
            if existing and not tc.overwrite:
                raise FileExistsError(
                    f"{self.run_dir} already holds checkpoints (last: {existing[-1].name}). Pass --resume to continue "
                    "that run, train.overwrite=true to start it again, or another name=... / train.output_dir=..."
                )
            return
        found = self.agreed_checkpoint()
        if found is None:
            if self.world.is_main:
                log.warning("train.resume: no checkpoint in %s, starting from scratch", self.run_dir)
            return
        checkpoint, state = found
        saved_yaml = (checkpoint / CONFIG_FILE).read_text(encoding="utf-8")
        differences = model_config_differences(saved_yaml, config)
        if differences:
            raise ValueError(f"cannot resume {checkpoint}: its model differs from this config's: "
                             + "; ".join(differences))
        changed = setting_differences(saved_yaml, config)
        if changed and self.world.is_main:  # allowed (other data or augmentation), but the run is then not one config
            log.warning("resuming with settings that differ from the checkpoint's (%s); config.yaml records this "
                        "config from now on, and the optimizer and lr schedule continue from the checkpoint",
                        "; ".join(changed))
        expected = {"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                    "global_batch_size": tc.global_batch_size}
        made_with = {key: state[key] for key in expected}
        if made_with != expected:
            raise ValueError(f"cannot resume {checkpoint}: it was made with {made_with}, this config gives {expected}")
        self.checkpoint, self.resume_state = checkpoint, state
        self.step = state["step"]
        self.skipped_before = [tuple(s) for s in state.get("skipped_train", [])]
        self.wall_time_before = float(state.get("wall_time_s", 0.0))  # checkpoints before this key: unknown, 0

    def agreed_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint every rank resumes from: rank 0 picks the newest intact one and sends its name and step;
        every other rank loads that same checkpoint from its own run folder (collective).

        Raises:
            OSError: on every rank, when a rank cannot read the chosen checkpoint (a node that does not see the
                run folder, or not yet its newest files) or finds another step in it; naming the rank and the path.
        """
        world = self.world
        found, problem = None, None
        if world.is_main:
            try:
                found = newest_intact_checkpoint(self.run_dir)
            except Exception as error:
                problem = error
        # (checkpoint folder name, step), None for none, "failed" when rank 0 raised (its own error says why)
        choice = broadcast_object(world, "failed" if problem else None if found is None else (found[0].name,
                                                                                              found[1]["step"]))
        if problem is not None:
            raise problem
        if choice == "failed":
            raise PeerFailedError("rank 0 could not pick a checkpoint to resume from")
        if choice is None:
            return None
        name, step = choice
        error = None
        if not world.is_main:
            path = self.run_dir / "checkpoints" / name
            try:
                found = path, load_checkpoint(path)
                if found[1]["step"] != step:
                    raise ValueError(f"it holds step {found[1]['step']}, rank 0's holds step {step}")
            except Exception as failure:
                error = f"rank {world.rank} cannot read {path} ({failure})"
        errors = [e for e in all_gather_objects(world, error) if e]  # every rank stops, none waits alone
        if errors:
            more = f" (and {len(errors) - 1} more ranks)" if len(errors) > 1 else ""
            raise OSError(f"{errors[0]}{more}: the run folder must be on a file system every node shares")
        return found

    # ------------------------------------------------------------------------------------------ 3. model
    def setup_model(self) -> None:
        """The image backbone with its weights and the video model on the training device.

        A random backbone (demo, tests) cannot be recreated from a tag: the run keeps its weights, and checkpoints and
        ``final/`` carry a copy, so that resuming, evaluate and predict see the very same frozen backbone.
        """
        config, world = self.config, self.world
        torch.manual_seed(config.train.seed)  # identical backbone and adapter init on every rank
        saved_backbone = image_weights_in(self.checkpoint) if self.checkpoint is not None else None
        self.image_model, self.weights = create_image_model(config.model, weights_file=saved_backbone)
        if saved_backbone is not None:
            # Only a random backbone is saved with checkpoints: the run's own random init, restored. Not the
            # checkpoint's file, which pruning deletes later; the run folder keeps its copy (image_weights).
            self.weights = RANDOM_INIT
        keeps_backbone = self.weights == RANDOM_INIT
        self.image_weights = self.run_dir / IMAGE_WEIGHTS_FILE if keeps_backbone else None
        # inject() rebuilds the blocks in place: keep the backbone's own tensors for start_run to write.
        self.backbone_tensors = backbone_tensors(self.image_model) if keeps_backbone else None
        if self.checkpoint is not None:
            self.model = adaptkit.from_pretrained(self.image_model, self.checkpoint, is_trainable=True)
            self.model.set_grad_checkpointing(config.model.grad_checkpointing)
        else:
            self.model = build_video_model(config, self.image_model, num_classes=len(self.classes))
        self.model.to(world.device)
        check_crop_size(self.model, config.data.augment.crop_size)
        seed_everything(config.train.seed + world.rank)  # from here on, per-rank randomness (drop path, augmentation)

    # ------------------------------------------------------------------------------------------ 4. optimizer
    def setup_optimizer(self) -> None:
        """AdamW over the trainable tensors and the per-iteration schedule; restored from the checkpoint if any."""
        config, world = self.config, self.world
        self.optimizer = build_optimizer(self.model, config.optim, world.device)
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch, self.total_steps)
        if self.resume_state is not None:
            state = self.resume_state
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            loss_sum, steps = state.get("log_window", (0.0, 0))  # checkpoints before the key: an empty window
            self.window_loss, self.window_steps = self.window_loss + loss_sum, steps
            if len(state["rng"]) == world.world_size:
                set_rng_state(state["rng"][world.rank])
            elif world.is_main:
                log.warning("the checkpoint was written by %d process(es), this run has %d: the random state of "
                            "augmentation and drop path is not restored (it starts again from train.seed); the data "
                            "order is unaffected", len(state["rng"]), world.world_size)

    # ------------------------------------------------------------------------------------------ 5. run folder
    def start_run(self) -> bool:
        """Write the run folder: clear a run being overwritten, drop unfinished checkpoint writes, record the config
        and the random backbone, open the logs. Returns whether this call created the folder."""
        config, world = self.config, self.world
        created = not self.run_dir.exists()
        barrier(world)  # every rank has looked before the main one writes anything
        if world.is_main:
            if self.checkpoint is None and config.train.overwrite:
                replaced = [name for name in ("checkpoints", "final", "train_summary.json", "eval_result.json",
                                              "controls") if (self.run_dir / name).exists()]
                for name in replaced:  # the previous run's results too, which would otherwise pass for this run's
                    path = self.run_dir / name
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
                if replaced:  # said, since a re-run of the same command deletes the last one's model
                    log.warning("train.overwrite is true: removed %s of the previous run in %s and started again",
                                ", ".join(replaced), self.run_dir)
            for leftover in remove_unfinished_checkpoints(self.run_dir):
                log.info("removed %s, a checkpoint write cut short by an earlier kill", leftover)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / CONFIG_FILE, to_yaml(config))
            if self.image_weights is not None:
                save_image_weights(self.backbone_tensors, self.image_weights)
            else:
                (self.run_dir / IMAGE_WEIGHTS_FILE).unlink(missing_ok=True)
        barrier(world)
        self.config_yaml = to_yaml(config)
        self.metrics = MetricLogger(self.run_dir, enabled=world.is_main,
                                    resume_step=self.step if self.checkpoint is not None else None)
        if world.is_main:
            print(f"backbone {describe_backbone(self.model)} ({self.weights}), strategy {self.model.strategy_name}, "
                  f"{self.model.num_frames} frames, {len(self.classes)} classes")
            self.model.print_trainable_parameters()
            if self.checkpoint is not None:
                print(f"resumed from {self.checkpoint} at step {self.step}/{self.total_steps}")
        return created

    # ------------------------------------------------------------------------------------------ helpers
    def skipped(self) -> list[Skip]:
        """Every training video skipped so far by any rank, including before the resumed checkpoint and those left
        out before training as missing (collective)."""
        ranks = all_gather_objects(self.world, list(self.train_set.skipped()))
        return sorted({*self.skipped_before, *self.left_out, *(tuple(s) for rank in ranks for s in rank)})

    def check_finite(self) -> None:
        """Stop a diverged run before it logs or checkpoints non-finite numbers (collective; one device sync).

        Raises:
            TrainingDiverged: a loss since the last check, or a trainable tensor, is NaN or infinite on any rank.
        """
        if self.checked_step == self.step:
            return
        weights = torch.stack([p.detach().isfinite().all() for p in self.model.parameters() if p.requires_grad])
        if any_rank(self.world, bool(self.nonfinite) or not bool(weights.all())):
            newest = self.saved_step if self.saved_step is not None else (
                self.resume_state["step"] if self.checkpoint is not None else None)
            kept = f"the newest checkpoint is step {newest}" if newest else "no checkpoint was written"
            raise TrainingDiverged(
                f"training diverged: the loss or the trained weights became NaN or infinite between step "
                f"{self.checked_step} and step {self.step}; stopped without logging or saving them ({kept}). Lower "
                f"optim.lr (now {self.config.optim.lr:g}) or set optim.clip_grad_norm and start again")
        self.checked_step = self.step

    def save(self, step: int) -> None:
        """Checkpoint ``step`` (collective: every rank's RNG state and skipped videos go in).

        Raises:
            TrainingDiverged: see :meth:`check_finite`; nothing is written.
        """
        self.check_finite()
        self.saved_step = step
        states = all_gather_objects(self.world, rng_state())
        skipped = self.skipped()
        window_mean = sum_over_ranks(self.world, self.window_loss).item() / self.world.world_size
        if self.world.is_main:
            training_state = {
                "step": step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": states, "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                "global_batch_size": self.config.train.global_batch_size, "world_size": self.world.world_size,
                "skipped_train": [list(s) for s in skipped], "wall_time_s": self.wall_time_before + self.elapsed(),
                "log_window": [window_mean, self.window_steps],
            }
            path = save_checkpoint(self.run_dir, step, self.model, training_state, self.config_yaml, self.classes,
                                   self.image_weights, self.config.train.keep_checkpoints)
            tqdm.write(f"checkpoint: {path}")
        barrier(self.world)

    def run_evaluation(self, step: int, epoch: int) -> Any:
        config = self.config
        workers = config.data.num_workers if config.eval.num_workers is None else config.eval.num_workers
        result = evaluate(self.model, self.eval_set, self.world, self.model.normalization, self.views,
                          config.eval.batch_size, config.eval.chunk_size, workers, bf16=self.bf16,
                          pin_memory=config.data.decode_device == "cpu")
        if result is not None:
            result.extra.update(step=step, epoch=epoch, run_dir=str(self.run_dir))
            self.metrics.log("eval", step, epoch=epoch, top1=result.top1, top5=result.top5,
                             mean_class_accuracy=result.mean_class_accuracy, num_videos=result.num_videos,
                             views=self.views)
            tqdm.write(f"eval @ step {step}: {format_result(result, len(self.classes))}")
        return result

    # ------------------------------------------------------------------------------------------ 6. loop
    def train(self) -> None:
        """Optimizer steps up to ``train.max_steps`` (or ``train.stop_at_step``), checkpointing and evaluating.

        The progress bar shows the loss, the learning rate, clips/s and ``data``: the share of the wall time spent
        waiting for the loader, which is the bottleneck when it stays high. Under torchrun the loss and ``data`` are
        means over every rank's share of the log window (one all-reduce per ``train.log_every`` steps).

        Raises:
            TrainingInterrupted: after SIGTERM or SIGINT on any rank, at the next step boundary, once a checkpoint
                of that step is written (see ``recipes._interrupt``).
        """
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", disable=not self.world.is_main,
                   dynamic_ncols=True)
        loader = self.make_loader()
        # The bar closes and the workers stop however the loop ends: they ignore SIGTERM, so workers left to the
        # interpreter's exit would hang it after an error (recipes._workers).
        with StopSignals(announce=self.world.is_main) as stop, bar, stopping_workers(loader):
            self._train(stop, bar, loader)

    def _train(self, stop: StopSignals, bar: tqdm, loader: DataLoader) -> None:
        config, world, tc = self.config, self.world, self.config.train
        model, accumulation, batch_size = self.model, self.accumulation, config.data.batch_size
        train_model: torch.nn.Module = model
        ddp = None
        if world.distributed:  # DDP registers only parameters with requires_grad: the frozen backbone is never synced
            ddp = DistributedDataParallel(model, device_ids=[world.device] if world.device.type == "cuda" else None)
            train_model = ddp
        if config.model.compile:
            train_model = torch.compile(train_model)
        augment = config.data.augment
        mixer = BatchMixer(len(self.classes), augment.mixup_alpha, augment.cutmix_alpha, augment.label_smoothing)
        mean, std = model.normalization

        stop_at = min(self.total_steps, tc.stop_at_step or self.total_steps)
        model.train()
        # Log-window accumulators; `paused` (checkpointing, evaluation) is left out of the throughput and data share.
        # The loss sums on the device, in float64 as a Python float would: no GPU sync per micro-batch.
        zero_loss = torch.zeros((), dtype=torch.float64, device=world.device)
        self.checked_step = self.step
        # Throughput counts this start's steps only (a resumed window began before it).
        window_start, timed_steps, paused, waited = time.perf_counter(), 0, 0.0, 0.0
        epoch = self.step // self.steps_per_epoch
        if self.evaluation_was_cut_short(epoch):
            paused += self._timed(self.run_evaluation, self.step, epoch)
        while self.step < stop_at:
            done_in_epoch = self.step - epoch * self.steps_per_epoch
            self.sampler.set_epoch(epoch, skip=done_in_epoch * accumulation * batch_size)
            self.train_set.set_epoch(epoch)  # seeded frame sampling differs per epoch
            for micro, ((clips, labels, _), wait) in enumerate(timed_batches(loader), start=1):
                waited += wait
                # Workers return uint8; conversion, normalisation, erasing and mixing run on the training device.
                video = prepare_batch(clips.to(world.device, non_blocking=True), mean, std, augment.random_erasing_p)
                video, targets = mixer(video, labels.to(world.device, non_blocking=True))  # (B, C, T, H, W), (B, K)
                sync = micro % accumulation == 0
                no_sync = ddp.no_sync if ddp is not None and not sync else contextlib.nullcontext
                with no_sync():
                    with autocast(world.device, self.bf16):
                        logits = train_model(video)
                    loss = F.cross_entropy(logits.float(), targets) / accumulation
                    loss.backward()
                self.window_loss = self.window_loss + loss.detach().double()
                self.nonfinite |= ~torch.isfinite(loss.detach())
                if not sync:
                    continue
                self.optimizer_step()
                self.window_steps += 1
                timed_steps += 1
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == self.total_steps:
                    self.check_finite()
                    elapsed = time.perf_counter() - window_start - paused
                    # (loss sum, wait share) summed over the ranks: every rank averaged its share of the batch.
                    wait_share = zero_loss + min(waited / elapsed, 1.0)
                    totals = sum_over_ranks(world, torch.stack([self.window_loss, wait_share]))
                    loss_sum, wait_sum = totals.tolist()
                    values = {"epoch": round(self.step / self.steps_per_epoch, 3),
                              "loss": loss_sum / world.world_size / self.window_steps,
                              "lr": self.step_lr,
                              "clips_per_s": timed_steps * tc.global_batch_size / elapsed,
                              "data_wait": wait_sum / world.world_size}
                    self.metrics.log("train", self.step, **values)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                                    clips_s=f"{values['clips_per_s']:.1f}", data=f"{100 * values['data_wait']:.0f}%")
                    self.window_loss, self.window_steps, timed_steps = zero_loss, 0, 0
                    window_start = time.perf_counter()
                    paused, waited = 0.0, 0.0
                if (tc.checkpoint_every and self.step % tc.checkpoint_every == 0) or self.step == stop_at:
                    paused += self._timed(self.save, self.step)
                if any_rank(world, stop.requested):  # every rank asks, so none waits alone in the next collective
                    if self.saved_step != self.step:
                        self.save(self.step)
                    raise TrainingInterrupted(self.step, stop.signum or signal.SIGTERM)
                if self.step == stop_at:
                    break
            if self.step % self.steps_per_epoch == 0:  # a whole epoch is done
                if tc.checkpoint_every == 0 and self.step < stop_at:
                    paused += self._timed(self.save, self.step)
                every = config.eval.every_epochs
                if every and self.eval_set is not None and (epoch + 1) % every == 0 and self.step < self.total_steps:
                    paused += self._timed(self.run_evaluation, self.step, epoch + 1)
                epoch += 1

    def evaluation_was_cut_short(self, epochs_done: int) -> bool:
        """Whether the run resumes at an epoch end whose evaluation is due but not in the logs: the checkpoint is
        written first, so a kill during that evaluation would otherwise lose it for good (the main rank decides)."""
        every, step = self.config.eval.every_epochs, self.step
        due = (self.checkpoint is not None and every and self.eval_set is not None and 0 < step < self.total_steps
               and step % self.steps_per_epoch == 0 and epochs_done % every == 0)
        return bool(due) and not all_gather_objects(self.world, self.metrics.has("eval", step))[0]

    def optimizer_step(self) -> None:
        """Clip (if configured), step the optimizer and the schedule, clear the gradients: one optimizer step."""
        clip = self.config.optim.clip_grad_norm
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        self.optimizer.step()
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    @staticmethod
    def _timed(fn: Any, *args: Any) -> float:
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    # ------------------------------------------------------------------------------------------ 7. finish
    def elapsed(self) -> float:
        """Seconds since this start of the run."""
        return time.perf_counter() - self.started

    def wall_times(self) -> dict[str, float]:
        """``wall_time_s``: this start of the run; ``wall_time_total_s``: with the starts before, up to the checkpoint
        this one resumed from (the time an interrupted start spent after its last checkpoint is lost with it)."""
        elapsed = self.elapsed()
        return {"wall_time_s": round(elapsed, 1), "wall_time_total_s": round(self.wall_time_before + elapsed, 1)}
    def summary(self, stopped: bool) -> dict[str, Any]:
        """What ``train_summary.json`` says of every run, finished or not (collective: the skipped videos)."""
        return {"run_dir": str(self.run_dir.resolve()), "step": self.step, "total_steps": self.total_steps,
                "world_size": self.world.world_size, "weights": self.weights,
                "image_weights": None if self.image_weights is None else str(self.image_weights),
                **self.wall_times(), "skipped_train": [list(s) for s in self.skipped()], "stopped": stopped}

    def write_stopped_summary(self) -> dict[str, Any]:
        """``train_summary.json`` of a run stopped before its last step (``stop_at_step`` or a signal), so it never
        describes an earlier start; returns the summary (collective)."""
        summary = self.summary(stopped=True)
        if self.world.is_main:
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        self.metrics.close()
        return summary

    def finish(self) -> dict[str, Any]:
        """Save ``final/``, evaluate it and write ``train_summary.json``; returns the summary."""
        config, world = self.config, self.world
        if self.step < self.total_steps:
            summary = self.write_stopped_summary()
            if world.is_main:
                print(f"stopped at step {self.step}/{self.total_steps} (train.stop_at_step); continue with --resume")
            return summary
        summary = self.summary(stopped=False)
        skipped = summary["skipped_train"]
        fingerprints = all_gather_objects(world, adapter_fingerprint(self.model))
        if len(set(fingerprints)) != 1:
            raise RuntimeError(f"ranks ended with different adapters: {fingerprints}")
        if world.is_main:
            save_model_dir(self.run_dir / "final", self.model, self.config_yaml, self.classes, self.image_weights)
            print(f"final model: {self.run_dir / 'final'}")
        barrier(world)
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        try:
            with StopAtOnce(self.step, str(self.run_dir / "final")):
                result = (self.run_evaluation(self.step, epochs) if self.eval_set is not None and config.eval.at_end
                          else None)
        except FinalEvaluationInterrupted:  # no collective here: the ranks are at different points of the evaluation
            if world.is_main:
                stopped = {**summary, **self.wall_times(), "stopped": True, "stopped_in": "final evaluation"}
                atomic_write_text(self.run_dir / "train_summary.json", json.dumps(stopped, indent=2) + "\n")
            self.metrics.close()
            raise
        summary.update(adapter_sha256_per_rank=fingerprints, **self.wall_times())
        if world.is_main:
            if result is not None:
                result.to_json(self.run_dir / "eval_result.json")
                summary["eval"] = {k: v for k, v in result.to_dict().items()
                                   if k not in ("video_ids", "labels", "predictions")}
            lines = [f"  {path} ({reason})" for path, reason in skipped]
            print("training data: " + (f"skipped {len(skipped)} videos:\n" + "\n".join(lines) if skipped
                                       else "no videos skipped"))
            if result is not None:  # gathered from every rank's shard
                print(f"evaluation data: {format_skipped(result)}")
            atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
            print(f"done in {summary['wall_time_s'] / 60:.1f} min wall clock ({world.world_size} process(es)); "
                  f"summary: {self.run_dir / 'train_summary.json'}")
        self.metrics.close()
        return summary

    # ------------------------------------------------------------------------------------------ all steps
    def run(self) -> dict[str, Any]:
        """Every step in order; returns the summary. A run that fails before its first optimizer step removes the
        run folder it created, and says so (a folder that existed before is kept, and the message names it)."""
        if self.config.eval.at_end and not has_eval_data(self.config) and self.world.is_main:
            log.warning("no data.val.annotations: the model will not be evaluated")
        self.setup_data()
        self.setup_checkpoint()
        self.setup_model()
        self.setup_optimizer()
        first_step = self.step
        created = self.start_run()
        try:
            self.train()
        except TrainingInterrupted:  # every rank stops at the same step, checkpoint written
            self.write_stopped_summary()
            raise
        except BaseException:
            if self.step == first_step and self.world.is_main:
                self.metrics.close()
                if created:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                    log.error("the run failed before its first step; removed its folder %s", self.run_dir)
                else:
                    log.error("the run failed before its first step; its folder %s existed before and is left in "
                              "place", self.run_dir)
            raise
        return self.finish()


if __name__ == "__main__":  # python -m recipes.train: the same as `adaptkit train`
    from recipes.cli import main as cli

    raise SystemExit(cli(["train", *sys.argv[1:]]))
