"""Data-parallel helpers for scripts started with ``torchrun --nproc_per_node N``.

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) every helper is
a no-op: one process, rank 0, nothing gathered, so a script behaves exactly as before.

Sharding is round-robin over a sequence of work units (e.g. image batches): unit ``i`` goes
to rank ``i % world``. :func:`gather_sharded` undoes it, so every rank gets all results in
the original order, as if one process had produced them.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

import torch
import torch.distributed as dist

from utils.errors import UserError

T = TypeVar("T")


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the one process that writes shared files and prints summaries."""
    return rank() == 0


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: not an integer; start with torchrun") from None


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA); returns this rank's device.

    A CUDA ``device`` becomes ``cuda:LOCAL_RANK``. Outside torchrun, returns ``device`` unchanged.
    """
    if _env_world() <= 1 or dist.is_initialized():
        return device
    if not dist.is_available():
        raise UserError("torchrun: this torch build has no torch.distributed; run without torchrun")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"torchrun: local rank {local} has no GPU ({torch.cuda.device_count()} visible); start at "
                            "most one process per GPU (--nproc_per_node) or pass --device cpu")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (after a final barrier) if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


def shard(units: Iterable[T]) -> Iterator[T]:
    """This rank's share of ``units``: those at positions ``rank, rank + world, ...``."""
    r, w = rank(), world_size()
    for i, unit in enumerate(units):
        if i % w == r:
            yield unit


def gather_sharded(mine: list[T]) -> list[T]:
    """Every rank's ``mine`` (results of :func:`shard`, one per unit) interleaved back into unit order.

    Objects travel pickled between the ranks of one job (never read from disk). Tensors should
    be on the CPU.
    """
    w = world_size()
    if w == 1:
        return list(mine)
    parts: list[list[T]] = [[] for _ in range(w)]
    dist.all_gather_object(parts, list(mine))
    out: list[T] = []
    for i in range(max(len(p) for p in parts)):
        out.extend(p[i] for p in parts if i < len(p))
    return out
