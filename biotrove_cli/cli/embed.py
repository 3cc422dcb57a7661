"""``biotrove embed PATH...``: image (or class text) embeddings for clustering and exploration."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from biotrove_cli.cli.options import (
    ArchOpt,
    AutoWorkersOpt,
    BatchSizeOpt,
    ClassTemplatesOpt,
    ClassTextTypeOpt,
    DeviceOpt,
    LabelsOpt,
    ModelOpt,
    NoCacheOpt,
    OutputOpt,
    PrecisionChoice,
    PrecisionOpt,
    RecursiveOpt,
    StrictOpt,
    SummaryOpt,
)
from biotrove_cli.output.embeddings import EmbedFormat


# long only by its option declarations; the body is flags -> EmbedConfig -> prepare_embed ->
# write_embeddings
def embed_cmd(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PATH]...",
            help="Image files, folders, globs, or '-' to read paths from stdin (one per line).",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = "clip-o",
    text: Annotated[
        bool,
        typer.Option(
            "--text",
            help="Embed the label bank's class texts instead (one row per class; no PATH).",
            rich_help_panel="Labels",
        ),
    ] = False,
    labels: LabelsOpt = None,
    text_type: ClassTextTypeOpt = None,
    templates: ClassTemplatesOpt = None,
    no_cache: NoCacheOpt = False,
    recursive: RecursiveOpt = False,
    arch: ArchOpt = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = PrecisionChoice.auto,
    workers: AutoWorkersOpt = None,
    format: Annotated[
        EmbedFormat,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="auto = by -o's suffix (.parquet, .npy, .jsonl, .json), JSON lines when piped. "
            "npy writes FILE.npy and FILE.index.csv.",
            rich_help_panel="Output",
        ),
    ] = EmbedFormat.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With -o FILE (parquet, npy, jsonl): skip images already in FILE, add the rest.",
            rich_help_panel="Output",
        ),
    ] = False,
    strict: StrictOpt = False,
) -> None:
    """Embed photos: one L2-normalised image embedding per image, streamed as they come.

    Rows: path, embedding (a fixed-size list of floats), model, dims, error.
    Unreadable files become rows with an error and no embedding, never a crash.
    An embedding is the image feature classify scores: open_clip's encode_image, normalised.

    Examples:

      biotrove embed photos/ -r -o embeddings.parquet

      biotrove embed 'card/*.JPG' -m model/ --format npy -o card.npy

      biotrove embed --text --labels demo -o classes.parquet
    """
    from biotrove_cli.core.evaluation.embed import EmbedConfig, prepare_embed
    from biotrove_cli.core.locks import lock_output
    from biotrove_cli.core.models.spec import backend_of
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.output.embeddings import resolve_embed_format, write_embeddings

    fmt = resolve_embed_format(format, output)
    to_file = output is not None and output != "-"
    cfg = EmbedConfig(
        paths=list(paths or []),
        model=model,
        recursive=recursive,
        batch_size=batch_size,
        device=resolve_device(device, backend=backend_of(model)),
        precision=precision.value,
        workers=workers,
        arch=arch,
        text=text,
        labels=str(labels) if labels else None,
        text_type=text_type,
        templates=templates,
        use_cache=not no_cache,
        output=output if to_file else None,
        output_format=fmt,
        resume=resume,
        strict=strict,
    )
    # one writer per output file (and its segments): a second job on it refuses at once
    with lock_output(output if to_file else None, "output file"):
        job = prepare_embed(cfg, stdin=sys.stdin if "-" in cfg.paths else None)
        write_embeddings(job, output, str(summary) if summary else None)
