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


PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)
"""How long a collective waits for a missing process before the run fails (e.g. a rank stuck on slow storage), by
default; ``train.dist_timeout_min`` sets it."""

_cpu_group: Any = None  # a gloo group next to NCCL, for flags that must not wait on the GPU stream


def device_index(local_rank: int, visible: int) -> int:
    """The CUDA device of the process with ``LOCAL_RANK`` ``local_rank`` when ``visible`` devices are visible.

    torchrun shows every process all the node's GPUs: process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK``. A launcher
    that gives each task its own GPU (SLURM ``--gpus-per-task=1``, a per-process ``CUDA_VISIBLE_DEVICES``) shows
    one, device 0, whatever the local rank: hence ``LOCAL_RANK`` modulo the number of visible devices.
    """
    return local_rank % max(visible, 1)


def setup(device: str = "auto", timeout: datetime.timedelta = PROCESS_GROUP_TIMEOUT) -> World:
    """Pick the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU).

    The device is ``cuda:<LOCAL_RANK mod visible GPUs>`` (:func:`device_index`).

    Args:
        device: "auto" (CUDA when available), "cuda" or "cpu".
        timeout: How long a collective waits for a missing process (``train.dist_timeout_min``).
    """
    global _cpu_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but CUDA is not available (train.device=auto uses it when it is)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    torch_device = torch.device("cpu")
    if use_cuda:
        torch_device = torch.device("cuda", device_index(local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timeout,
            device_id=torch_device if use_cuda else None,
        )
        _cpu_group = dist.new_group(backend="gloo") if use_cuda else None
    return World(rank, world_size, local_rank, torch_device)


def teardown() -> None:
    global _cpu_group
    _cpu_group = None
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


def broadcast_object(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself without a process group)."""
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(world: World, flag: bool) -> bool:
    """Whether ``flag`` is true on any rank: one all-reduce of one integer on the CPU (a gloo group under NCCL), so
    asking every step does not wait for the GPU."""
    if not world.distributed:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_cpu_group)
    return bool(value.item())


def sum_over_ranks(world: World, values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (one all-reduce; ``values`` itself without a process group)."""
    if world.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


class PeerFailedError(RuntimeError):
    """This process stops because another one failed (that one reports why)."""


# What gloo and NCCL say when the other end went away; a rank's own NCCL error (a version mismatch, a CUDA error)
# mentions NCCL too, and must keep its message.
_PEER_GONE = ("closed by peer", "reset by peer", "closed by remote", "broken pipe", "communicator was aborted")


def is_collective_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a collective that waited longer than the process group's timeout
    (``train.dist_timeout_min``) for another process, in a process started by torchrun: gloo's "Timed out waiting
    ...ms for recv", NCCL's watchdog "collective operation timeout". Their messages name neither the setting nor a
    rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("timed out waiting" in message or "operation timeout" in message)


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` came out of a collective of a process group whose other process failed (its own message,
    e.g. gloo's "Connection closed by peer", is then misleading): torch.distributed's errors, and the RuntimeErrors
    gloo raises for a peer that went away, in a process started by torchrun (``WORLD_SIZE`` above 1)."""
    if isinstance(error, PeerFailedError):
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if isinstance(error, dist.DistError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in message for words in _PEER_GONE)
