"""Rank and world helpers that work with and without torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    restart_count: int

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """What torchrun told this process (single-process defaults otherwise)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        restart_count=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
    )


def init_process_group(device_type: str, timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun set up: nccl on GPUs, gloo on CPU. Idempotent."""
    import datetime

    import torch.distributed as dist

    env = dist_env()
    if env.is_distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
            # torchrun keeps one store across worker restarts: without a per-restart namespace
            # a restarted rank can read a dead peer's address from the previous round and fail
            # to connect ("Connection refused")
            from torch.distributed.rendezvous import rendezvous

            store, rank, world = next(
                rendezvous("env://", env.rank, env.world_size, timeout=timeout)
            )
            store = dist.PrefixStore(f"biotrove/restart-{env.restart_count}", store)
            dist.init_process_group(
                backend=backend, store=store, rank=rank, world_size=world, timeout=timeout
            )
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    return env


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: str) -> bool:
    """True if ``flag`` is set on any rank (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
