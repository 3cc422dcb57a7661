"""Rank and world helpers that work with and without torchrun, and inside a process group
someone else set up (Ray Train's workers start torch.distributed themselves)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    restart_count: int
    local_world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _group() -> Any | None:
    """torch.distributed when a process group is up (it cannot be unless torch is imported)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def dist_env() -> DistEnv:
    """This process's place in the run (the one place that reads it): rank and world size from
    the process group when one is up, else from torchrun's variables; local rank, local world
    size and restart count from the launcher's variables (torchrun and Ray Train set them);
    single-process defaults without any."""
    env = os.environ
    rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    dist = _group()
    if dist is not None:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistEnv(
        rank=rank,
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")),
    )


def init_process_group(device_type: str, timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group torchrun set up: nccl on GPUs, gloo on CPU. Idempotent: a group
    that is already up (torchrun's, or one a caller such as Ray Train set up) is used as is."""
    import datetime

    import torch.distributed as dist

    env = dist_env()
    if env.is_distributed and not dist.is_initialized():
        _import_before_the_group()
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


def _import_before_the_group() -> None:
    """Import ``torch.distributed.nn`` while no process group is up.

    Its functions take ``group=group.WORLD`` as a default argument, bound when the module is
    first imported. open_clip imports it (for its loss), and the trainer and the eval workers
    import open_clip after joining the group: the defaults then held the group itself, which so
    outlived ``destroy_process_group`` with gloo's threads and sockets until interpreter
    shutdown. Torn down there, in no particular order while the peer ranks exit too, it could
    abort a worker at exit (SIGABRT, and torchrun reports the job failed). Imported first, the
    defaults are None (the default group, looked up at each call) and destroying the group
    really ends it.
    """
    import torch.distributed.nn  # noqa: F401


@contextlib.contextmanager
def process_group(device_type: str, timeout_s: float = 1800.0) -> Iterator[DistEnv]:
    """Run inside a process group: one that is already up is used and left up at the end (its
    owner, e.g. Ray Train, destroys it); otherwise the one torchrun describes is joined here and
    destroyed at the end; one process without torchrun runs without one."""
    owned = _group() is None
    env = init_process_group(device_type, timeout_s)
    try:
        yield env
    finally:
        if owned:
            destroy_process_group()


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


def sum_ranks(values: list[int], device: str) -> list[int]:
    """``values`` summed over every rank (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [int(v) for v in t.tolist()]
