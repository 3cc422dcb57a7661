"""``biotrove classify PATH...``: classify field photos, for people and pipelines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from biotrove_cli.cli.options import (
    ArchOpt,
    AutoWorkersOpt,
    BatchSizeOpt,
    ClassTemplatesOpt,
    ClassTextTypeOpt,
    DeviceOpt,
    FormatOpt,
    LabelsOpt,
    ModelOpt,
    NoCacheOpt,
    OutputOpt,
    PrecisionChoice,
    PrecisionOpt,
    RankChoice,
    RankOpt,
    RecursiveOpt,
    StrictOpt,
    SummaryOpt,
)
from biotrove_cli.output.render import Format

LABELS = "Labels"


# long only by its option declarations (Typer reads them from the signature); the body is
# flags -> ClassifyConfig -> prepare_classify -> write_predictions
def classify_cmd(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH...",
            help="Image files, folders, globs, or '-' to read paths from stdin (one per line).",
            show_default=False,
        ),
    ],
    model: ModelOpt = "clip-o",
    labels: LabelsOpt = None,
    within: Annotated[
        str | None,
        typer.Option(
            "--within",
            metavar="TAXON",
            help="Only species under this taxon, any rank (e.g. Aves, Quercus).",
            rich_help_panel=LABELS,
        ),
    ] = None,
    checklist: Annotated[
        str | None,
        typer.Option(
            "--checklist",
            metavar="FILE",
            help="Only the species a checklist names (a table or a .txt of binomials).",
            rich_help_panel=LABELS,
        ),
    ] = None,
    rank: RankOpt = RankChoice.species,
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Predictions per image.")] = 5,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            "--min-confidence",
            metavar="P",
            min=0.0,
            max=1.0,
            help="One row per image at the deepest rank (up to --rank) whose probability "
            "reaches P: species when sure, else genus, family...",
        ),
    ] = None,
    recursive: RecursiveOpt = False,
    text_type: ClassTextTypeOpt = None,
    templates: ClassTemplatesOpt = None,
    no_cache: NoCacheOpt = False,
    arch: ArchOpt = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = PrecisionChoice.auto,
    workers: AutoWorkersOpt = None,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With -o FILE (csv/jsonl): skip images already in FILE and append the rest.",
            rich_help_panel="Output",
        ),
    ] = False,
    strict: StrictOpt = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE.html",
            help="Also write a self-contained HTML report (a gallery to filter and sort) after "
            "the run; the same as `biotrove report` of the results.",
            rich_help_panel="Output",
        ),
    ] = None,
) -> None:
    """Classify photos: top-k taxa per image with probabilities, streamed as they come.

    Rows: path, rank, prediction (1..k), name, common name, lineage, score, error.
    Unreadable files become error rows and a count on stderr, never a crash.

    Examples:

      biotrove classify photos/ -r -o out.csv

      biotrove classify photos/ --labels demo --format json | jq '.[] | select(.error)'

      biotrove classify 'card/*.JPG' -m model/ --rank genus -k 3

      find card -name '*.jpg' | biotrove classify - -m model/ --format jsonl | jq .name

      biotrove classify photos/ -m model/ --within Aves --min-confidence 0.8
    """
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.evaluation.classify import ClassifyConfig, prepare_classify
    from biotrove_cli.core.locks import lock_output
    from biotrove_cli.core.models.spec import backend_of
    from biotrove_cli.core.runtime import resolve_device, timed
    from biotrove_cli.output.predictions import write_predictions
    from biotrove_cli.output.render import resolve_format

    fmt = resolve_format(format, output)
    to_file = output is not None and output != "-"
    cfg = ClassifyConfig(
        paths=list(paths),
        model=model,
        labels=str(labels) if labels else None,
        within=within,
        checklist=checklist,
        rank=rank.to_rank(),
        k=k,
        min_confidence=min_confidence,
        recursive=recursive,
        batch_size=batch_size,
        device=resolve_device(device, backend=backend_of(model)),
        precision=precision.value,
        workers=workers,
        text_type=text_type,
        templates=templates,
        use_cache=not no_cache,
        output=output if to_file else None,
        output_format=fmt.value,
        resume=resume,
        strict=strict,
        arch=arch,
    )
    if resume and not to_file:
        raise UsageError("--resume needs -o FILE", hint="the file the interrupted run wrote")
    if report is not None and to_file and Path(output).resolve() == report.resolve():
        raise UsageError(
            "--report and -o name the same file", hint="e.g. -o out.csv --report out.html"
        )
    rows: list[dict] = []
    # one writer per output file: a second job on it refuses before touching it
    with lock_output(output if to_file else None, "output file"):
        with timed("classify: inputs, labels, model and class texts"):
            job = prepare_classify(cfg, stdin=sys.stdin if "-" in paths else None)
        if report is not None:
            job.listeners.append(rows.extend)
        write_predictions(job, fmt, output, str(summary) if summary else None)
    if report is not None:
        from biotrove_cli.output.report.page import classify_report

        # a resumed run's file holds the earlier run's photos too: the report reads it back
        classify_report(rows, job.summary.as_dict(), output if resume else None, str(report))
