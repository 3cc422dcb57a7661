"""``biotrove train``: CLIP training on shards, from one CPU to many GPU nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from biotrove_cli.cli.options import (
    DataWorkersOpt,
    DeviceOpt,
    FormatOpt,
    OutputOpt,
    ReportToOpt,
    TrainPrecisionOpt,
    report_to_list,
)
from biotrove_cli.output.render import Format

LAUNCH = "Launch (torchrun)"
CONFIG = "Configuration"


def train_cmd(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[KEY=VALUE]...",
            help="Dotted config overrides, highest precedence (e.g. optim.lr=1e-4 data.workers=4).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            "-p",
            help="clip-o, clip-b, clip-m or tiny (`biotrove presets`).",
            rich_help_panel=CONFIG,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Training shards: a shard folder (its train/ split), a split folder, a brace "
            "pattern, http(s)://, s3:// or gs:// URLs, or pipe:COMMAND.",
        ),
    ] = None,
    val_data: Annotated[
        str | None,
        typer.Option("--val-data", help="Shards for the periodic zero-shot evaluation per rank."),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run folder (default runs/PRESET-TIMESTAMP).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE.yaml",
            help="A YAML config (see --print-config).",
            rich_help_panel=CONFIG,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Initial weights (a model spec) or 'none' for random weights.",
            rich_help_panel=CONFIG,
        ),
    ] = None,
    text_type: Annotated[
        str | None,
        typer.Option(
            "--text-type",
            help="A BioTrove caption type, "
            "'random' (one per batch, as BioTrove) or "
            "'random-per-sample'.",
            rich_help_panel=CONFIG,
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, rich_help_panel=CONFIG)] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", min=1, help="Stop after N optimizer steps.", rich_help_panel=CONFIG
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Per process.", rich_help_panel=CONFIG)
    ] = None,
    workers: DataWorkersOpt = None,
    precision: TrainPrecisionOpt = None,
    device: DeviceOpt = None,
    seed: Annotated[int | None, typer.Option("--seed", rich_help_panel=CONFIG)] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile", help="torch.compile the model.", rich_help_panel=CONFIG
        ),
    ] = None,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Processes on this node (GPUs, or CPU processes with gloo).",
            rich_help_panel=LAUNCH,
        ),
    ] = 1,
    nnodes: Annotated[
        str, typer.Option("--nnodes", help="Nodes, N or MIN:MAX.", rich_help_panel=LAUNCH)
    ] = "1",
    node_rank: Annotated[int | None, typer.Option("--node-rank", rich_help_panel=LAUNCH)] = None,
    rdzv_endpoint: Annotated[
        str,
        typer.Option(
            "--rdzv-endpoint",
            metavar="HOST:PORT",
            help="c10d rendezvous of a multi-node job.",
            rich_help_panel=LAUNCH,
        ),
    ] = "",
    rdzv_id: Annotated[
        str, typer.Option("--rdzv-id", help="Job id shared by the nodes.", rich_help_panel=LAUNCH)
    ] = "",
    max_restarts: Annotated[
        int,
        typer.Option(
            "--max-restarts",
            min=0,
            help="Restart failed workers this many times (they resume from the latest checkpoint).",
            rich_help_panel=LAUNCH,
        ),
    ] = 0,
    resume: Annotated[
        str,
        typer.Option(
            "--resume",
            metavar="auto|latest|PATH",
            help="auto: continue the run in --run-dir from its newest complete checkpoint, or "
            "start one when the folder holds none (rerunning a command resumes it); latest: "
            "a checkpoint must exist; PATH: continue from that checkpoint file.",
        ),
    ] = "auto",
    allow_config_change: Annotated[
        bool,
        typer.Option("--allow-config-change", help="Allow a resumed run to change its schedule."),
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved config as YAML and exit.",
            rich_help_panel=CONFIG,
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check data, model and plan; train nothing.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at a shard that cannot be read or ends early (default: warn, count it, "
            "go on).",
        ),
    ] = False,
    report_to: ReportToOpt = None,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
) -> None:
    """Train or fine-tune a CLIP model on biotrove shards (one process, or torchrun)."""
    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.distributed.launch import LaunchConfig
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.training.run import default_run_dir
    from biotrove_cli.output import console
    from biotrove_cli.output.render import emit

    flags: dict[str, Any] = {
        "data.train": data,
        "data.val": val_data,
        "model.init": init,
        "data.text_type": text_type,
        "epochs": epochs,
        "max_steps": steps,
        "data.batch_size": batch_size,
        "data.workers": workers,
        "precision": precision.value if precision else None,
        "device": device,
        "seed": seed,
        "model.compile": compile,
        "run_dir": str(run_dir) if run_dir else None,
        "data.strict": True if strict else None,
        "tracking.report_to": report_to_list(report_to),
    }
    cfg = configlib.resolve(
        TrainConfig, preset=preset, config_file=config_file, flags=flags, overrides=overrides or []
    )
    if resume != "auto" and not cfg.run_dir:
        raise UsageError(
            f"--resume {resume} needs the run's folder", hint="add --run-dir runs/NAME"
        )
    if not cfg.run_dir:
        cfg.run_dir = str(default_run_dir(preset or cfg.model.arch))
    if print_config:
        header = f"biotrove train config (preset: {preset or 'none'})"
        console.write_out(configlib.dump_yaml(cfg, header=header))
        return
    launch_cfg = LaunchConfig(
        nproc_per_node=nproc_per_node,
        nnodes=nnodes,
        node_rank=node_rank,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=rdzv_id,
        max_restarts=max_restarts,
    )
    launch_cfg.validate()
    if dry_run:
        from biotrove_cli.core.training.plan import dry_run as do_dry_run

        report = do_dry_run(cfg, world_size=launch_cfg.max_world_size)
        emit(report, format, output, title="Training plan (dry run)", columns=["key", "value"])
        return

    from biotrove_cli.cli.workers import MODULE as WORKER_MODULE
    from biotrove_cli.core.training.launch import launch_training
    from biotrove_cli.output.train_progress import TrainReporter

    with TrainReporter() as reporter:
        summary = launch_training(
            cfg,
            launch_cfg,
            resume=resume,
            allow_config_change=allow_config_change,
            quiet=console.STATE.quiet,
            verbose=console.STATE.verbose,
            callbacks=reporter,
            worker=(WORKER_MODULE, "train"),
        )
    title = f"Training run {Path(cfg.run_dir)}"
    emit(summary, format, output, title=title, columns=["key", "value"])
