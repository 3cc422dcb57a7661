"""``biotrove tune``: a hyperparameter search on Ray Tune, each trial a Ray Train run."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from biotrove_cli.cli.options import (
    FormatOpt,
    OutputOpt,
    ReportToOpt,
    SummaryOpt,
    report_to_list,
)
from biotrove_cli.output.render import Format

SEARCH = "Search"
TRIALS = "Trials (Ray)"
CONFIG = "Configuration"

EPILOG = """Examples:

  biotrove tune --preset tiny --data shards --val-data shards --space space.yaml \\
      --num-samples 8 --max-steps 200

  biotrove tune --resume --name tune-tiny-20250101-120000

space.yaml maps config keys to distributions: optim.lr: {loguniform: [1e-5, 1e-3]},
optim.beta1: {choice: [0.9, 0.98]}, data.batch_size: {grid: [32, 64]}, uniform, randint.
The best trial's config is written to SEARCH/best.yaml: biotrove train --config best.yaml."""


class SchedulerChoice(str, Enum):
    asha = "asha"
    fifo = "fifo"


class ModeChoice(str, Enum):
    max = "max"
    min = "min"


def tune_cmd(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[KEY=VALUE]...",
            help="Dotted config overrides of every trial (e.g. data.workers=0).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", "-p", help="A training preset.", rich_help_panel=CONFIG),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", metavar="FILE.yaml", help="A training config.", rich_help_panel=CONFIG
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Training shards.", rich_help_panel=CONFIG)
    ] = None,
    val_data: Annotated[
        str | None,
        typer.Option(
            "--val-data",
            help="Validation shards: the metric each trial reports.",
            rich_help_panel=CONFIG,
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space",
            metavar="SPACE.yaml",
            help="The search space: dotted config keys -> distributions (see below).",
            rich_help_panel=SEARCH,
        ),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples",
            min=1,
            help="Trials drawn from the space (a grid is repeated this many times).",
            rich_help_panel=SEARCH,
        ),
    ] = 1,
    scheduler: Annotated[
        SchedulerChoice,
        typer.Option(
            "--scheduler",
            case_sensitive=False,
            help="asha stops weak trials early; fifo runs every trial to the end.",
            rich_help_panel=SEARCH,
        ),
    ] = SchedulerChoice.asha,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="What to optimise: val/RANK_top1, val/RANK_top5, val/loss or train/loss.",
            rich_help_panel=SEARCH,
        ),
    ] = "val/species_top1",
    mode: Annotated[
        ModeChoice | None,
        typer.Option(
            "--mode",
            case_sensitive=False,
            help="max or min (default: min for a loss, else max).",
            show_default=False,
            rich_help_panel=SEARCH,
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            min=1,
            help="Steps per trial (default: the config's max_steps, else its epochs count).",
            rich_help_panel=SEARCH,
        ),
    ] = None,
    grace_steps: Annotated[
        int | None,
        typer.Option(
            "--grace-steps",
            min=1,
            help="ASHA's grace period in steps: no trial stops earlier (default 1/8 of a "
            "trial); trials also validate this often unless val_every is set.",
            rich_help_panel=SEARCH,
        ),
    ] = None,
    grace_epochs: Annotated[
        int | None,
        typer.Option(
            "--grace-epochs",
            min=1,
            help="The grace period when trials are counted in epochs (no step budget).",
            rich_help_panel=SEARCH,
        ),
    ] = None,
    reduction_factor: Annotated[
        int,
        typer.Option(
            "--reduction-factor",
            min=2,
            help="ASHA keeps the best 1/N of the trials at each rung.",
            rich_help_panel=SEARCH,
        ),
    ] = 2,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent",
            min=1,
            help="Trials at once (default: as many as the cluster's CPUs/GPUs fit).",
            rich_help_panel=TRIALS,
        ),
    ] = None,
    workers_per_trial: Annotated[
        int,
        typer.Option(
            "--workers-per-trial",
            min=1,
            help="Ray Train workers (training processes) per trial.",
            rich_help_panel=TRIALS,
        ),
    ] = 1,
    cpus_per_worker: Annotated[
        float,
        typer.Option(
            "--cpus-per-worker",
            min=0.0,
            help="CPUs each worker reserves (its intra-op threads).",
            rich_help_panel=TRIALS,
        ),
    ] = 1.0,
    gpus_per_worker: Annotated[
        float,
        typer.Option(
            "--gpus-per-worker", min=0.0, help="GPUs each worker reserves.", rich_help_panel=TRIALS
        ),
    ] = 0.0,
    storage_path: Annotated[
        str,
        typer.Option(
            "--storage-path",
            help="Where searches go (shared by every node of a multi-node cluster).",
            rich_help_panel=TRIALS,
        ),
    ] = "runs/tune",
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The search's folder name (default tune-PRESET-TIMESTAMP).",
            rich_help_panel=SEARCH,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted search --name (its settings come from its folder).",
            rich_help_panel=SEARCH,
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            metavar="RAY_ADDRESS",
            help="Join a running Ray cluster (HOST:PORT or auto) instead of starting one here.",
            rich_help_panel=TRIALS,
        ),
    ] = None,
    report_to: ReportToOpt = None,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
) -> None:
    """Search hyperparameters with Ray Tune: ASHA over trials of biotrove's own Trainer."""
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.tune.search import load_search, require_ray
    from biotrove_cli.output import console
    from biotrove_cli.output.tune_report import TuneReporter, describe_plan, emit_trials

    require_ray()
    if grace_steps is not None and grace_epochs is not None:
        raise UsageError("--grace-steps and --grace-epochs exclude each other")
    storage = _storage(storage_path)
    if resume:
        if not name:
            raise UsageError("--resume needs the search's --name", hint="see SEARCH/search.yaml")
        scfg = load_search(storage / name, address=address)
    else:
        scfg = _new_search(
            overrides=overrides or [],
            preset=preset,
            config_file=config_file,
            flags={
                "data.train": _absolute(data),
                "data.val": _absolute(val_data),
                "tracking.report_to": report_to_list(report_to),
            },
            space=space,
            settings={
                "name": name,
                "storage_path": storage,
                "num_samples": num_samples,
                "scheduler": scheduler.value,
                "metric": metric,
                "mode": mode.value if mode else ("min" if metric.endswith("loss") else "max"),
                "max_concurrent": max_concurrent,
                "workers_per_trial": workers_per_trial,
                "cpus_per_worker": cpus_per_worker,
                "gpus_per_worker": gpus_per_worker,
                "max_steps": max_steps,
                "grace": grace_steps or grace_epochs,
                "reduction_factor": reduction_factor,
                "address": address,
            },
        )
        if grace_steps is not None and scfg.time_attr == "epoch":
            raise UsageError(
                "--grace-steps: these trials are counted in epochs (no step budget)",
                hint="give --max-steps, or use --grace-epochs",
            )
    describe_plan(scfg)
    from biotrove_cli.core.tune.search import run_search

    result = run_search(
        scfg, TuneReporter(scfg.metric, scfg.time_attr), verbose=console.STATE.verbose > 0
    )
    emit_trials(result, format, output, summary)
    _finish(result, scfg)


def _new_search(
    *,
    overrides: list[str],
    preset: str | None,
    config_file: Path | None,
    flags: dict[str, Any],
    space: Path | None,
    settings: dict[str, Any],
) -> Any:
    """Flags -> a checked SearchConfig (the space and the plan checked before Ray starts)."""
    from datetime import datetime

    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.tune.search import SearchConfig
    from biotrove_cli.core.tune.space import load_space

    if space is None:
        raise UsageError("--space is needed", hint="a YAML file of config keys -> distributions")
    base = configlib.resolve(
        TrainConfig, preset=preset, config_file=config_file, flags=flags, overrides=overrides
    )
    base.data.train = _absolute(base.data.train) or ""
    base.data.val = _absolute(base.data.val) or ""
    if not settings["name"]:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        settings["name"] = f"tune-{preset or base.model.arch}-{stamp}"
    scfg = SearchConfig(base=base, space=load_space(space, base), **settings)
    scfg.check()
    return scfg


def _storage(text: str) -> Path:
    """``--storage-path`` as an absolute folder; a URI (s3://...) is refused: trials write
    normal run folders there with plain file I/O."""
    import re

    from biotrove_cli.core.errors import UsageError

    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise UsageError(
            f"--storage-path {text}: a file system path is needed (trials write normal run "
            "folders there)",
            hint="on several machines, a folder on a file system they all share (NFS, Lustre)",
        )
    return Path(text).expanduser().resolve()


def _absolute(spec: str | None) -> str | None:
    """Local shard paths as absolute paths: Ray's workers run in other folders (brace patterns,
    ``::`` lists, URLs and ``pipe:`` commands keep their form)."""
    import os

    from biotrove_cli.core.data.urls import is_remote, split_list

    if not spec:
        return spec
    parts = split_list(spec)
    return "::".join(p if is_remote(p) else os.path.abspath(os.path.expanduser(p)) for p in parts)


def _finish(result: Any, scfg: Any) -> None:
    """Where the best config is; a clear end when the search was interrupted or all failed."""
    from biotrove_cli.core.errors import TrainingError
    from biotrove_cli.output import console

    if result.best_path is not None:
        console.info(f"best config: biotrove train --config {result.best_path}")
    resume = f"biotrove tune --resume --name {scfg.name} --storage-path {scfg.storage_path}"
    if result.interrupted:
        console.info(f"the search stopped before every trial ended; continue it: {resume}")
        raise typer.Exit(130)
    if result.best is None:
        errors = [r["error"] for r in result.records if r.get("error")]
        raise TrainingError(
            "no trial reported " + scfg.metric + (f" (first error: {errors[0]})" if errors else ""),
            hint="fix the cause and continue the search: " + resume,
        )
