"""``biotrove shard``: metadata + images -> WebDataset shards with taxonomic captions."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from biotrove_cli.cli.options import FormatOpt, OutputOpt, SummaryOpt, WriterWorkersOpt
from biotrove_cli.output.render import Format

EPILOG = (
    "Examples:\n\n"
    "  biotrove shard meta.parquet --images photos/ --out shards/ --val-fraction 0.05\n\n"
    "  biotrove shard meta.parquet --images photos/ --out shards/ --part 3/8   (one of 8 "
    "machines)\n\n"
    "  biotrove shard --finalize shards/\n\n"
    "Rerun the same command after an interruption: complete shards are kept, the rest redone. "
    "Exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted."
)


class ResizeMode(str, Enum):
    keep_ratio_largest = "keep_ratio_largest"
    center_crop = "center_crop"
    keep = "keep"
    none = "none"


SEL = "Selection"
IMG = "Images and captions"
SCALE = "Shards and scale"
DL = "Download"


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# Long only by its option declarations; the body is flags -> ShardConfig -> one core call
# -> output/shard_report.
def shard_cmd(
    metadata: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Metadata files (Parquet/CSV/TSV; BioTrove, iNat2021 or generic lineage schema).",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            metavar="DIR",
            help="Photo folder: found by the path/file column, else as {photo_id}.jpg|png|webp.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Output dataset folder.")
    ] = None,
    categories: Annotated[
        str | None,
        typer.Option(
            "--categories",
            metavar="NAMES",
            help="Keep rows within these taxa, any rank (comma list, e.g. Aves,Insecta).",
            rich_help_panel=SEL,
        ),
    ] = None,
    min_per_species: Annotated[
        int,
        typer.Option(
            "--min-per-species",
            min=0,
            help="Species with fewer photos go to the 'unseen' split (0 = none).",
            rich_help_panel=SEL,
        ),
    ] = 0,
    max_per_species: Annotated[
        int,
        typer.Option(
            "--max-per-species",
            min=0,
            help="Keep at most this many photos per species (0 = all).",
            rich_help_panel=SEL,
        ),
    ] = 0,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.99,
            help="Fraction of the (non-rare) samples in the 'val' split.",
            rich_help_panel=SEL,
        ),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of shuffling, capping and splitting.")
    ] = 0,
    image_size: Annotated[
        int,
        typer.Option("--image-size", min=8, help="Target size in pixels.", rich_help_panel=IMG),
    ] = 224,
    resize_mode: Annotated[
        ResizeMode,
        typer.Option(
            "--resize-mode",
            case_sensitive=False,
            help="keep_ratio_largest: longest side to --image-size (never upscaled); "
            "center_crop: square crop; keep: re-encode as is; none: pass JPEG bytes through.",
            rich_help_panel=IMG,
        ),
    ] = ResizeMode.keep_ratio_largest,
    jpeg_quality: Annotated[
        int,
        typer.Option(
            "--jpeg-quality",
            min=1,
            max=100,
            help="JPEG quality when re-encoding.",
            rich_help_panel=IMG,
        ),
    ] = 95,
    caption: Annotated[
        str,
        typer.Option(
            "--caption",
            metavar="TYPE",
            help="Text type of {key}.txt, what stock open_clip trains on.",
            rich_help_panel=IMG,
        ),
    ] = "taxon_com",
    captions: Annotated[
        str,
        typer.Option(
            "--captions",
            metavar="TYPES",
            help="Text types written as {key}.{type}.txt: 'all', 'none' or a comma list of "
            "com, common_name, sci, sci_com, scientific_name, taxon, taxonTag, taxonTag_com, "
            "taxon_com, taxonomic_name.",
            rich_help_panel=IMG,
        ),
    ] = "all",
    samples_per_shard: Annotated[
        int,
        typer.Option(
            "--samples-per-shard", min=1, help="Samples per shard.", rich_help_panel=SCALE
        ),
    ] = 1000,
    max_shard_bytes: Annotated[
        str,
        typer.Option(
            "--max-shard-bytes",
            metavar="SIZE",
            help="Start an overflow tar (shard-N_1.tar) past this size, e.g. 500MB, 1GiB "
            "(0 = no limit).",
            rich_help_panel=SCALE,
        ),
    ] = "0",
    workers: WriterWorkersOpt = None,
    part: Annotated[
        str,
        typer.Option(
            "--part",
            metavar="K/N",
            help="Do part K of N of the shards (N machines, one dataset; no coordination).",
            rich_help_panel=SCALE,
        ),
    ] = "1/1",
    finalize: Annotated[
        Path | None,
        typer.Option(
            "--finalize",
            metavar="DIR",
            help="Only write sizes.json, taxonomy.parquet and manifest.json of DIR once all "
            "parts are written.",
            rich_help_panel=SCALE,
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Stop at the first bad or missing image (exit 1)."),
    ] = False,
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch rows whose image is not under --images from photo_url first.",
            rich_help_panel=DL,
        ),
    ] = False,
    download_workers: Annotated[
        int,
        typer.Option("--download-workers", min=1, help="Concurrent downloads.", rich_help_panel=DL),
    ] = 8,
    download_timeout: Annotated[
        float,
        typer.Option("--download-timeout", min=0.01, help="Seconds per try.", rich_help_panel=DL),
    ] = 30.0,
    download_retries: Annotated[
        int,
        typer.Option(
            "--download-retries",
            min=0,
            help="Extra tries after a transient failure (exponential backoff).",
            rich_help_panel=DL,
        ),
    ] = 3,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
) -> None:
    """Write WebDataset shards (train/val/unseen) with taxonomic captions from metadata + images.

    Rerun the same command after any interruption: it resumes. Bad images are counted, not fatal.
    """
    from biotrove_cli.core.data.shard import (
        ShardConfig,
        finalize_dataset,
        parse_bytes,
        parse_captions,
        parse_part,
        shard_dataset,
    )
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.output import shard_report

    if finalize is not None:
        if metadata or images or out:
            raise UsageError(
                "--finalize DIR takes no metadata, --images or --out",
                hint="run `biotrove shard --finalize DIR` on its own",
            )
        result = finalize_dataset(finalize)
        shard_report.report_finalized(finalize)
        shard_report.emit_result(result, format, output, summary)
        return
    missing = [
        flag
        for flag, value in (("METADATA", metadata), ("--images", images), ("--out", out))
        if not value
    ]
    if missing:
        raise UsageError(
            f"missing {', '.join(missing)}",
            hint="biotrove shard METADATA... --images DIR --out DIR (or --finalize DIR)",
        )
    cfg = ShardConfig(
        metadata=list(metadata or []),
        images=images,  # type: ignore[arg-type]
        out=out,  # type: ignore[arg-type]
        categories=[c.strip() for c in (categories or "").split(",") if c.strip()],
        min_per_species=min_per_species,
        max_per_species=max_per_species,
        seed=seed,
        val_fraction=val_fraction,
        image_size=image_size,
        resize_mode=resize_mode.value,
        jpeg_quality=jpeg_quality,
        caption=caption,
        captions=parse_captions(captions),
        samples_per_shard=samples_per_shard,
        max_shard_bytes=parse_bytes(max_shard_bytes),
        workers=_default_workers() if workers is None else workers,
        part=parse_part(part),
        strict=strict,
        download=download,
        download_workers=download_workers,
        download_timeout=download_timeout,
        download_retries=download_retries,
    )
    with shard_report.Phases() as phases:
        result = shard_dataset(cfg, progress=phases.update, phase=phases.start)
    shard_report.report(result)
    shard_report.emit_result(result, format, output, summary)
