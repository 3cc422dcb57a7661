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
    callbacks: Callbacks | None = None,
    worker: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Train ``cfg`` in this process or in torchrun workers; the run's summary records.

    ``callbacks`` report progress when this process trains (one process); torchrun workers
    report through their own. ``worker`` is what torchrun starts on every rank: a module and
    its leading arguments (the CLI's worker entry, which owns a worker's error boundary and
    progress and calls :func:`run_worker`); ``quiet`` is handed on to the workers.

    Raises:
        UsageError: ``device`` does not exist on this machine (before anything is written).
        LaunchError / PreemptedError: a worker failed or the job was stopped (torchrun).
    """
    from biotrove_cli.core.distributed.launch import launch
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.core.training.run import summarize, write_launch_config
    from biotrove_cli.core.training.trackers import check_available

    launch_cfg.validate()
    # a device this machine lacks is a usage error here, once, before any worker starts
    resolve_device(cfg.device, option="device")
    check_available(list(cfg.tracking.report_to))  # before any process starts
    run_dir = Path(cfg.run_dir)
    config_path = write_launch_config(run_dir, cfg)
    if launch_cfg.single_process:
        run_worker(
            config_path,
            resume=resume,
            allow_config_change=allow_config_change,
            callbacks=callbacks,
        )
    else:
        if not worker:
            raise ValueError("launch_training: more than one process needs a worker module")
        module, *args = worker
        args += ["--config", str(config_path)]
        if resume:
            args += ["--resume", resume]
        if allow_config_change:
            args.append("--allow-config-change")
        if quiet:
            args.append("--quiet")
        (callbacks or Callbacks()).on_launch(
            {"nproc_per_node": launch_cfg.nproc_per_node, "backend": _backend()}
        )
        launch(module, args, launch_cfg)
    return summarize(run_dir)


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
