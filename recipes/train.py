"""Train a video classifier from a pretrained image transformer (AIM by default).

    python -m recipes.train                                      # synthetic demo: no data, no download, ~2 min CPU
    python -m recipes.train --config recipes/configs/k400_vitb16_8x16.yaml
    python -m recipes.train --config recipes/configs/k400_vitb16_8x16.yaml optim.lr=1e-4 data.batch_size=4
    python -m recipes.train --config recipes/configs/k400_vitb16_8x16.yaml --resume   # after an interruption
    torchrun --nproc_per_node 8 -m recipes.train --config recipes/configs/k400_vitb16_8x16.yaml

Top to bottom: config -> process setup -> data -> model -> optimizer and schedule -> resume -> training loop ->
final model -> evaluation. The run folder (``runs/<name>`` unless ``train.output_dir``) receives ``config.yaml``,
``metrics.jsonl`` / ``train.csv`` / ``eval.csv``, ``checkpoints/step_<N>/``, ``final/`` (adapter, config, class names;
what ``recipes.evaluate`` and ``recipes.predict`` read), ``eval_result.json`` and ``train_summary.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import adaptkit
from adaptkit._io import atomic_write_text
from adaptkit.data import BatchMixer, prepare_batch
from recipes._builders import (
    RANDOM_INIT,
    build_optimizer,
    build_scheduler,
    build_video_model,
    create_image_model,
    save_image_weights,
)
from recipes._checkpoint import (
    IMAGE_WEIGHTS_FILE,
    image_weights_in,
    load_state,
    prepare_run_dir,
    rng_state,
    save_checkpoint,
    save_model_dir,
    set_rng_state,
)
from recipes._config import RecipeConfig, load_config, to_yaml
from recipes._data import ResumableSampler, eval_dataset, has_eval_data, train_dataset
from recipes._distributed import World, all_gather_objects, barrier, setup, teardown
from recipes._evaluation import autocast, evaluate, format_result
from recipes._logging import MetricLogger, setup_logging

log = logging.getLogger("recipes.train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recipes.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (default: recipes/configs/synthetic_motion.yaml, the demo)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. optim.lr=1e-4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the training summary (also written to ``<run>/train_summary.json``)."""
    args = parse_args(argv)
    config = load_config(args.config, list(args.overrides) + (["train.resume=true"] if args.resume else []))
    world = setup(config.train.device)
    try:
        return train(config, world)
    finally:
        teardown()


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Run ``fn(*args)`` and return the seconds it took."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


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


def train(config: RecipeConfig, world: World) -> dict[str, Any]:
    started = time.perf_counter()
    # ------------------------------------------------------------------ process-wide state (recipes only)
    setup_logging(world.is_main)
    tc = config.train
    if tc.num_threads is not None:
        torch.set_num_threads(tc.num_threads)
    if world.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and world.device.type == "cuda")
    run_dir = config.run_dir
    checkpoint = prepare_run_dir(config, world)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    config_yaml = to_yaml(config)

    # ------------------------------------------------------------------ data
    train_set, classes = train_dataset(config)
    eval_set, views = eval_dataset(config, classes) if has_eval_data(config) else (None, "")
    if eval_set is None and world.is_main:
        log.warning("no data.val.annotations: the model will not be evaluated")
    per_step = config.data.batch_size * world.world_size
    accumulation = tc.global_batch_size // per_step
    if accumulation * per_step != tc.global_batch_size:
        raise ValueError(f"train.global_batch_size={tc.global_batch_size} is not a multiple of data.batch_size x "
                         f"processes = {config.data.batch_size} x {world.world_size}")
    steps_per_epoch = len(train_set) // world.world_size // config.data.batch_size // accumulation
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training clips do not fill one step of {tc.global_batch_size} clips")
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    micro_per_epoch = steps_per_epoch * accumulation
    sampler = ResumableSampler(train_set, world, tc.seed, micro_per_epoch * config.data.batch_size)
    loader = DataLoader(
        train_set, batch_size=config.data.batch_size, sampler=sampler, num_workers=config.data.num_workers,
        pin_memory=world.device.type == "cuda", persistent_workers=config.data.num_workers > 0,
        generator=torch.Generator().manual_seed(tc.seed + world.rank),  # worker seeds leave the global RNG alone
    )

    # ------------------------------------------------------------------ model
    torch.manual_seed(tc.seed)  # identical backbone and adapter init on every rank
    # A random backbone (demo, tests) cannot be recreated from a tag: the run keeps its weights, and checkpoints and
    # final/ carry a copy, so that resuming, evaluate and predict see the very same frozen backbone.
    saved_backbone = image_weights_in(checkpoint) if checkpoint is not None else None
    image_model, weights = create_image_model(config.model, weights_file=saved_backbone)
    image_weights = None
    if weights == RANDOM_INIT or saved_backbone is not None:
        image_weights = run_dir / IMAGE_WEIGHTS_FILE
        if world.is_main:
            save_image_weights(image_model, image_weights)
    if checkpoint is not None:
        model = adaptkit.from_pretrained(image_model, checkpoint, is_trainable=True)
        model.set_grad_checkpointing(config.model.grad_checkpointing)
    else:
        model = build_video_model(config, image_model, num_classes=len(classes))
    model.to(world.device)
    if world.is_main:
        print(f"backbone {config.model.name} ({weights}), strategy {config.model.strategy}, "
              f"{config.data.num_frames} frames, {len(classes)} classes")
        model.print_trainable_parameters()
    seed_everything(tc.seed + world.rank)  # from here on, per-rank randomness (drop path, augmentation)

    # ------------------------------------------------------------------ optimizer, schedule, resume
    optimizer = build_optimizer(model, config.optim, world.device)
    scheduler = build_scheduler(optimizer, config.optim, steps_per_epoch, total_steps)
    step = 0
    if checkpoint is not None:
        state = load_state(checkpoint)
        expected = {"steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                    "global_batch_size": tc.global_batch_size}
        found = {key: state[key] for key in expected}
        if found != expected:
            raise ValueError(f"cannot resume {checkpoint}: it was made with {found}, this config gives {expected}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        if len(state["rng"]) == world.world_size:
            set_rng_state(state["rng"][world.rank])
        if world.is_main:
            print(f"resumed from {checkpoint} at step {step}/{total_steps}")

    train_model: torch.nn.Module = model
    ddp = None
    if world.distributed:  # DDP registers only parameters with requires_grad: the frozen backbone is never synced
        ddp = DistributedDataParallel(model, device_ids=[world.device] if world.device.type == "cuda" else None)
        train_model = ddp
    if config.model.compile:
        train_model = torch.compile(train_model)
    augment = config.data.augment
    mixer = BatchMixer(len(classes), augment.mixup_alpha, augment.cutmix_alpha, augment.label_smoothing)
    mean, std = model.normalization
    metrics = MetricLogger(run_dir, enabled=world.is_main, resume_step=step if checkpoint is not None else None)

    def save(step: int) -> None:
        states = all_gather_objects(world, rng_state())
        if world.is_main:
            training_state = {
                "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": states,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                "global_batch_size": tc.global_batch_size, "world_size": world.world_size,
            }
            path = save_checkpoint(run_dir, step, model, training_state, config_yaml, classes, image_weights,
                                   tc.keep_checkpoints)
            tqdm.write(f"checkpoint: {path}")
        barrier(world)

    def run_evaluation(step: int, epoch: int) -> Any:
        result = evaluate(model, eval_set, world, (mean, std), views, config.eval.batch_size, config.eval.chunk_size,
                          config.data.num_workers if config.eval.num_workers is None else config.eval.num_workers,
                          bf16=bf16)
        if result is not None:
            result.extra.update(step=step, epoch=epoch, run_dir=str(run_dir))
            metrics.log("eval", step, epoch=epoch, top1=result.top1, top5=result.top5,
                        mean_class_accuracy=result.mean_class_accuracy, num_videos=result.num_videos, views=views)
            tqdm.write(f"eval @ step {step}: {format_result(result, len(classes))}")
        return result

    # ------------------------------------------------------------------ training loop
    stop_at = min(total_steps, tc.stop_at_step or total_steps)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not world.is_main,
               dynamic_ncols=True)
    model.train()
    # Log-window accumulators; `paused` is the time spent checkpointing or evaluating, left out of the throughput.
    window_loss, window_steps, window_start, paused = 0.0, 0, time.perf_counter(), 0.0
    epoch = step // steps_per_epoch
    while step < stop_at:
        done_in_epoch = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, skip=done_in_epoch * accumulation * config.data.batch_size)
        train_set.set_epoch(epoch)  # seeded frame sampling differs per epoch
        for micro, (clips, labels, _) in enumerate(loader, start=1):
            # Workers return uint8; conversion, normalisation, erasing and mixing run on the training device.
            video = prepare_batch(clips.to(world.device, non_blocking=True), mean, std, augment.random_erasing_p)
            video, targets = mixer(video, labels.to(world.device, non_blocking=True))  # (B, C, T, H, W), (B, K)
            sync = micro % accumulation == 0
            no_sync = ddp.no_sync if ddp is not None and not sync else contextlib.nullcontext
            with no_sync():
                with autocast(world.device, bf16):
                    logits = train_model(video)
                loss = F.cross_entropy(logits.float(), targets) / accumulation
                loss.backward()
            window_loss += loss.item()
            if not sync:
                continue
            if config.optim.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                               config.optim.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_steps += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == stop_at:
                elapsed = time.perf_counter() - window_start - paused
                values = {"epoch": round(step / steps_per_epoch, 3), "loss": window_loss / window_steps,
                          "lr": optimizer.param_groups[0]["lr"],
                          "clips_per_s": window_steps * tc.global_batch_size / elapsed}
                metrics.log("train", step, **values)
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                                clips_s=f"{values['clips_per_s']:.1f}")
                window_loss, window_steps, window_start, paused = 0.0, 0, time.perf_counter(), 0.0
            if (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == stop_at:
                paused += timed(save, step)
            if step == stop_at:
                break
        if step % steps_per_epoch == 0:  # a whole epoch is done
            if tc.checkpoint_every == 0 and step < stop_at:
                paused += timed(save, step)
            every = config.eval.every_epochs
            if every and eval_set is not None and (epoch + 1) % every == 0 and step < total_steps:
                paused += timed(run_evaluation, step, epoch + 1)
            epoch += 1
    bar.close()

    summary: dict[str, Any] = {"run_dir": str(run_dir), "step": step, "total_steps": total_steps,
                               "world_size": world.world_size, "weights": weights,
                               "wall_time_s": round(time.perf_counter() - started, 1)}  # this process, this start
    if step < total_steps:
        if world.is_main:
            print(f"stopped at step {step}/{total_steps} (train.stop_at_step); continue with --resume")
        metrics.close()
        return {**summary, "stopped": True}

    # ------------------------------------------------------------------ final model and evaluation
    fingerprints = all_gather_objects(world, adapter_fingerprint(model))
    if len(set(fingerprints)) != 1:
        raise RuntimeError(f"ranks ended with different adapters: {fingerprints}")
    if world.is_main:
        save_model_dir(run_dir / "final", model, config_yaml, classes, image_weights)
        print(f"final model: {run_dir / 'final'}")
    barrier(world)
    result = run_evaluation(step, epochs) if eval_set is not None and config.eval.at_end else None
    # Each rank's dataset copy tracked the unreadable videos it met.
    skipped = sorted({tuple(s) for rank in all_gather_objects(world, list(train_set.skipped())) for s in rank})
    summary.update(stopped=False, adapter_sha256_per_rank=fingerprints, skipped_train=[list(s) for s in skipped],
                   wall_time_s=round(time.perf_counter() - started, 1))
    if world.is_main:
        if result is not None:
            result.to_json(run_dir / "eval_result.json")
            summary["eval"] = {k: v for k, v in result.to_dict().items() if k not in ("video_ids",)}
        lines = [f"  {path} ({reason})" for path, reason in skipped]
        print("training data: " + (f"skipped {len(skipped)} unreadable videos:\n" + "\n".join(lines) if skipped
                                   else "no videos skipped"))
        if result is not None:  # gathered from every rank's shard
            left_out = result.skipped_ids
            print(f"evaluation data: {len(left_out)} unreadable videos left out: {left_out}" if left_out
                  else "evaluation data: no videos skipped")
        atomic_write_text(run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"done in {summary['wall_time_s'] / 60:.1f} min wall clock ({world.world_size} process(es)); "
              f"summary: {run_dir / 'train_summary.json'}")
    metrics.close()
    return summary


if __name__ == "__main__":
    main()
