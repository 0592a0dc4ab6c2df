"""Process-group setup for ``torchrun`` (one process per device) and the few collectives the recipes use.

Single-process runs need no launcher: without ``WORLD_SIZE`` in the environment everything below degrades to
no-ops, so the recipes have one code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits: its global rank, the number of processes, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> World:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU).

    Args:
        device: "auto" (CUDA when available), "cuda" or "cpu".
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but CUDA is not available (train.device=auto uses it when it is)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30),
            device_id=torch_device if use_cuda else None,
        )
    return World(rank, world_size, local_rank, torch_device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_gather_objects(world: World, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (a one-element list without a process group)."""
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, value)
    return gathered
