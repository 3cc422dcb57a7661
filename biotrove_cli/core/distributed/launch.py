"""Run a biotrove worker module under torch's elastic launcher, in-process, as torchrun would.

With one process on one node the worker runs directly in this process (no launcher, no
rendezvous). Otherwise ``torch.distributed.run`` starts ``nproc_per_node`` workers per node;
multi-node jobs meet through a c10d rendezvous (``rdzv_endpoint`` + ``rdzv_id``), and
``max_restarts`` lets torchrun restart failed workers (the worker resumes from its latest
checkpoint). A worker that dies takes the job down: torchrun stops the others and this function
raises a :class:`LaunchError` naming the failed rank and its exit code. The workers end with
this process, however it ends (:mod:`biotrove_cli.core.processes`): they watch its pid, which
they find in their environment.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from biotrove_cli.core.errors import BiotroveError, PreemptedError, UsageError


class LaunchError(BiotroveError):
    """A worker failed."""


@dataclass
class LaunchConfig:
    nproc_per_node: int = 1
    nnodes: str = "1"  # "N" or "MIN:MAX" (elastic)
    node_rank: int | None = None
    rdzv_endpoint: str = ""  # HOST:PORT of the c10d rendezvous (multi-node)
    rdzv_id: str = ""
    rdzv_backend: str = "c10d"
    max_restarts: int = 0
    monitor_interval: float = 0.5
    shutdown_timeout: int = 300  # seconds the workers get to save after a signal

    @property
    def multi_node(self) -> bool:
        return self.nnodes not in ("1", "1:1")

    @property
    def single_process(self) -> bool:
        return self.nproc_per_node == 1 and not self.multi_node

    @property
    def max_world_size(self) -> int:
        """Processes of the whole job at its largest (``MIN:MAX`` nodes count MAX)."""
        try:
            nodes = int(self.nnodes.split(":")[-1])
        except ValueError:
            nodes = 1
        return self.nproc_per_node * nodes

    def validate(self) -> None:
        if self.nproc_per_node < 1:
            raise UsageError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must not be negative, got {self.max_restarts}")
        if self.multi_node and not self.rdzv_endpoint:
            raise UsageError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT",
                hint="every node runs the same command with the same --rdzv-endpoint and "
                "--rdzv-id (e.g. the first node's address and a free port)",
            )

    def torchrun_args(self, module: str, module_args: list[str]) -> list[str]:
        args = [
            "--nproc-per-node",
            str(self.nproc_per_node),
            "--nnodes",
            self.nnodes,
            "--max-restarts",
            str(self.max_restarts),
            "--monitor-interval",
            str(self.monitor_interval),
            # SLURM preemption sends SIGUSR1 (or SIGTERM): forward both to the workers, which
            # save a checkpoint at the next step and exit 75; give them time to write it
            "--signals-to-handle",
            "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
            "--shutdown-timeout",
            str(self.shutdown_timeout),
        ]
        if self.multi_node:
            args += [
                "--rdzv-backend",
                self.rdzv_backend,
                "--rdzv-endpoint",
                self.rdzv_endpoint,
                "--rdzv-id",
                self.rdzv_id or "biotrove",
            ]
            if self.node_rank is not None:
                args += ["--node-rank", str(self.node_rank)]
        else:
            args += ["--standalone"]
        return [*args, "--module", module, *module_args]


def _describe_failure(rank: int, exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"rank {rank} was killed by {name}"
    return f"rank {rank} exited with code {exitcode}"


def launch(module: str, module_args: list[str], cfg: LaunchConfig) -> None:
    """Start the workers and wait for them; raise LaunchError/PreemptedError on failure."""
    cfg.validate()
    # torchrun sets OMP_NUM_THREADS=1 with a warning when unset; choose it ourselves, quietly:
    # the cores of this node shared by its processes
    if "OMP_NUM_THREADS" not in os.environ:
        cores = os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // cfg.nproc_per_node))
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # the elastic agent logs rendezvous chatter at INFO/WARNING on its own loggers
    for name in (
        "torch.distributed.elastic",
        "torch.distributed.run",
        "torch.distributed.elastic.agent.server.api",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from biotrove_cli.core.processes import mark_launcher

    mark_launcher()  # the workers end when this process does, even by kill -9
    args = get_args_parser().parse_args(cfg.torchrun_args(module, module_args))
    try:
        run(args)
    except SignalException as exc:
        # the agent forwarded the signal and waited for the workers (they save, then exit)
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise PreemptedError(
            f"stopped by {exc.sigval.name}; the workers saved a checkpoint",
            hint="requeue the job, or rerun the same command: it continues from the checkpoint",
        ) from None
    except ChildFailedError as exc:
        failures = exc.failures  # global rank -> ProcessFailure
        codes = {f.exitcode for f in failures.values()}
        if codes == {PreemptedError.exit_code}:
            raise PreemptedError(
                "training was preempted; a checkpoint was saved",
                hint="requeue the job, or rerun the same command: it continues from the checkpoint",
            ) from None
        parts = [_describe_failure(rank, f.exitcode) for rank, f in sorted(failures.items())]
        raise LaunchError(
            "a worker failed: " + "; ".join(parts),
            hint="the failing rank's error is printed above; the job was stopped on every "
            "rank. Fix it and rerun the same command (training continues from its latest "
            "checkpoint)",
        ) from None
