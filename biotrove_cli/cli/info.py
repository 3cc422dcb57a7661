"""``biotrove info PATH``: describe a shard folder, run folder, checkpoint, bundle or table."""

from __future__ import annotations

from typing import Annotated

import typer

from biotrove_cli.cli.options import FormatOpt, OutputOpt, SummaryOpt
from biotrove_cli.output.render import Format


def info_cmd(
    path: Annotated[
        str,
        typer.Argument(
            help="A shard folder (or remote shards: URLs, brace patterns, pipe:COMMAND), run "
            "folder, checkpoint (.pt), exported model folder, or metadata table."
        ),
    ],
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
) -> None:
    """Describe what is at PATH: counts, splits, lineage coverage, architecture, provenance."""
    from biotrove_cli.core.inspect import describe
    from biotrove_cli.output.render import emit

    report = describe(path)
    emit(
        report.rows,
        format,
        output,
        title=report.title,
        columns=["section", "key", "value"],
        summary={"path": str(path), "kind": report.kind, **report.document},
        summary_path=summary,
    )
