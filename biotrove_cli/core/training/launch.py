"""Launching a training run: the config every process reads (``launch.yaml`` in the run
folder), then this process trains alone, or torchrun starts workers
(:mod:`biotrove_cli.core.distributed.launch`) that each run :func:`run_worker`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.distributed.launch import LaunchConfig
from biotrove_cli.core.training.config import TrainConfig
from biotrove_cli.core.training.hooks import Callbacks, TrainResult


def launch_training(
    cfg: TrainConfig,
    launch_cfg: LaunchConfig,
    *,
    resume: str | None = None,
    allow_config_change: bool = False,
    quiet: bool = False,
    verbose: int = 0,
    callbacks: Callbacks | None = None,
    worker: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Train ``cfg`` in this process or in torchrun workers; the run's summary records.

    ``callbacks`` report progress when this process trains (one process); torchrun workers
    report through their own. ``worker`` is what torchrun starts on every rank: a module and
    its leading arguments (the CLI's worker entry, which owns a worker's error boundary and
    progress and calls :func:`run_worker`); ``quiet`` and ``verbose`` are handed on to the
    workers.

    The run folder is locked for the whole job (one writer per run folder; a multi-node job's
    nodes share it, so there each node's launcher runs unlocked).

    Raises:
        UsageError: ``device`` does not exist on this machine (before anything is written).
        BusyError: another live job is writing the run folder.
        LaunchError / PreemptedError / InterruptedByUser: a worker failed or the job was
            stopped (torchrun).
    """
    import contextlib

    from biotrove_cli.core.locks import lock_folder
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.core.training.run import summarize
    from biotrove_cli.core.training.trackers import check_available

    launch_cfg.validate()
    # a device this machine lacks is a usage error here, once, before any worker starts
    resolve_device(cfg.device, option="device")
    check_available(list(cfg.tracking.report_to))  # before any process starts
    run_dir = Path(cfg.run_dir)
    with (
        contextlib.nullcontext() if launch_cfg.multi_node else lock_folder(run_dir, "training run")
    ):
        _launch(cfg, launch_cfg, resume, allow_config_change, (quiet, verbose), callbacks, worker)
    return summarize(run_dir)


def _launch(
    cfg: TrainConfig,
    launch_cfg: LaunchConfig,
    resume: str | None,
    allow_config_change: bool,
    verbosity: tuple[bool, int],
    callbacks: Callbacks | None,
    worker: tuple[str, ...],
) -> None:
    """Write launch.yaml, then train here or start the torchrun workers."""
    from biotrove_cli.core.distributed.launch import launch
    from biotrove_cli.core.training.run import write_launch_config

    config_path = write_launch_config(Path(cfg.run_dir), cfg)
    if launch_cfg.single_process:
        run_worker(
            config_path,
            resume=resume,
            allow_config_change=allow_config_change,
            callbacks=callbacks,
        )
        return
    if not worker:
        raise ValueError("launch_training: more than one process needs a worker module")
    module, *args = worker
    args += ["--config", str(config_path)]
    if resume:
        args += ["--resume", resume]
    if allow_config_change:
        args.append("--allow-config-change")
    quiet, verbose = verbosity
    if quiet:
        args.append("--quiet")
    if verbose:
        args += ["--verbose", str(verbose)]
    (callbacks or Callbacks()).on_launch(
        {"nproc_per_node": launch_cfg.nproc_per_node, "backend": _backend()}
    )
    try:
        launch(module, args, launch_cfg)
    except KeyboardInterrupt:
        _raise_if_saved(Path(cfg.run_dir))
        raise


def _raise_if_saved(run_dir: Path) -> None:
    """After Ctrl-C under torchrun: say where the workers stopped when they saved."""
    from biotrove_cli.core.errors import InterruptedByUser
    from biotrove_cli.core.layout import checkpoint_step
    from biotrove_cli.core.models.checkpoint import resolve_latest
    from biotrove_cli.core.training.run import read_run_json

    info = read_run_json(run_dir)
    latest = resolve_latest(run_dir)
    if (
        info.get("status") == "interrupted"
        and latest is not None
        and checkpoint_step(latest.name) == info.get("steps")
    ):
        raise InterruptedByUser(
            f"interrupted at step {info.get('steps', '?')}; checkpoint saved",
            hint="rerun the same command to continue the run from there",
        ) from None


def run_worker(
    config_path: Path,
    *,
    resume: str | None = None,
    allow_config_change: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """This process's part of a launched run: the config the launcher wrote, then train."""
    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.trainer import train
    from biotrove_cli.core.training.validate import make_validator

    cfg = configlib.resolve(TrainConfig, config_file=config_path)
    return train(
        cfg,
        resume=resume,
        allow_config_change=allow_config_change,
        callbacks=callbacks,
        validator_factory=make_validator,
    )


def _backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"
