"""``biotrove report SOURCE... -o report.html``: classify, eval and training results as one
self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OUTPUT = "Output"
CONTENT = "Content"


def report_cmd(
    sources: Annotated[
        list[str],
        typer.Argument(
            metavar="SOURCE...",
            help="classify results (CSV/JSON/JSONL/Parquet), eval records (--format json...), "
            "eval or classify --summary files, eval --per-class/--confusion CSVs, run folders.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE.html",
            help="Write the page to FILE ('-' = stdout).",
            rich_help_panel=OUTPUT,
        ),
    ],
    title: Annotated[
        str | None,
        typer.Option("--title", metavar="TEXT", help="The page's title.", rich_help_panel=OUTPUT),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            metavar="DIR",
            help="Folder the photos' relative paths are under (default: the current folder, "
            "then the results file's folder).",
            rich_help_panel=CONTENT,
        ),
    ] = None,
    thumb_size: Annotated[
        int,
        typer.Option(
            "--thumb-size",
            metavar="PX",
            min=0,
            max=1024,
            help="Longest side of the gallery's thumbnails (0: none).",
            rich_help_panel=CONTENT,
        ),
    ] = 160,
    classes: Annotated[
        int,
        typer.Option(
            "--classes",
            metavar="N",
            min=1,
            help="Per-class accuracy: the N worst classes per rank.",
            rich_help_panel=CONTENT,
        ),
    ] = 25,
    confusion_classes: Annotated[
        int,
        typer.Option(
            "--confusion-classes",
            metavar="N",
            min=2,
            help="Confusion heat map: the N classes most involved in mistakes.",
            rich_help_panel=CONTENT,
        ),
    ] = 20,
) -> None:
    """One self-contained HTML page (no network, no server) of classify, eval and training
    results: a photo gallery to filter and sort, accuracy by rank with intervals, per-class
    accuracy, confusion, and training curves.

    Examples:

      biotrove report predictions.csv -o report.html

      biotrove report e.json e-summary.json pc.csv cm.csv runs/tiny-1/ -o report.html

      biotrove report card.jsonl --images /media/card --thumb-size 240 -o card.html
    """
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.report.build import ReportConfig, build_report
    from biotrove_cli.output import progress
    from biotrove_cli.output.report.page import emit_report

    if output != "-" and Path(output).is_dir():  # before the thumbnails are made
        raise UsageError(f"-o {output} is a folder", hint="name the page's file: -o report.html")

    cfg = ReportConfig(
        sources=list(sources),
        title=title,
        images=str(images) if images else None,
        thumb_size=thumb_size,
        max_classes=classes,
        max_confusion=confusion_classes,
    )
    with progress.progress("thumbnails", unit="photos") as cb:
        report = build_report(cfg, cb)
    emit_report(report, output)
