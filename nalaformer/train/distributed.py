"""Distributed data parallel set-up: the same command runs on one process or under ``torchrun``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is created with NCCL on GPUs and gloo on
CPU; rank 0 writes logs and checkpoints. A process group that already exists (created by the caller) is reused and
left alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the run.

    Attributes:
        rank: global rank (0 on a single process).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → this process's CUDA device when CUDA is available, else CPU; ``"cuda"`` → ``cuda:<local_rank>``;
    anything else is passed to ``torch.device``."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} was requested but CUDA is not available; use device='cpu' or 'auto'")
    return device


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group if there is one (creating it when needed) and pick the device.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; default ``"auto"``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and dist.is_available() and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved)
    return DistributedContext(device=resolved)


def teardown_distributed() -> None:
    """Destroy the default process group if one exists (call once at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, context: DistributedContext, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``"sum"``, ``"max"`` or ``"min"``) across ranks; a no-op on one process."""
    if context.enabled:
        operation = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
        dist.all_reduce(tensor, op=operation)
    return tensor


def gather_objects(obj: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` on one process."""
    if not context.enabled:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, context: DistributedContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not context.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (no-op on one process)."""
    if context.enabled:
        dist.barrier()
