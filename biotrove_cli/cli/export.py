"""``biotrove export CHECKPOINT --out DIR``: a safe, portable, verified model bundle."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from biotrove_cli.cli.options import ArchOpt, DeviceOpt, LabelsOpt, SummaryOpt
from biotrove_cli.core.models.export.config import Dtype, ExportFormat  # light: no torch
from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION, TEXT_TYPES


class ReportFormat(str, Enum):
    auto = "auto"
    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


TextTypeChoice = Enum("TextTypeChoice", {t: t for t in TEXT_TYPES}, type=str)  # type: ignore[misc]

EXAMPLES = (
    "Examples:\n\n"
    "biotrove export runs/tiny --out models/tiny\n\n"
    "biotrove export biotroveclip-vit-b-16-from-openai-epoch-40.pt --out clip-o --dtype fp16 "
    "--labels arboretum_sample_chunk1.parquet\n\n"
    "biotrove export models/tiny --out models/tiny-onnx --format onnx\n\n"
    "biotrove export clip-o --out clip-o-int8 --format onnx --quantize int8 --calibration photos/"
)


class Quantize(str, Enum):
    int8 = "int8"


# Long only by its signature: one annotated parameter per flag.
def export_cmd(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT",
            help="Training checkpoint (.pt), BioTrove-CLIP file or preset (clip-o|clip-b|clip-m), "
            "run folder, exported folder, hf-hub:org/repo or ARCH:TAG.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", metavar="DIR", help="Folder to create (written whole, or not at all)."
        ),
    ],
    dtype: Annotated[
        Dtype,
        typer.Option("--dtype", case_sensitive=False, help="Precision of the stored weights."),
    ] = Dtype.fp32,
    labels: LabelsOpt = None,
    arch: ArchOpt = None,
    format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="open_clip: config + safetensors for open_clip's local-dir: loader; "
            "onnx: image and text encoders as ONNX, which biotrove runs without PyTorch.",
        ),
    ] = ExportFormat.open_clip,
    quantize: Annotated[
        Quantize | None,
        typer.Option(
            "--quantize",
            case_sensitive=False,
            help="ONNX only: int8 image encoder (onnxruntime quantisation): dynamic, or static "
            "with --calibration. About 2x the fp32 speed on an AVX2 CPU.",
            rich_help_panel="ONNX",
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            metavar="PHOTOS",
            help="Photos (a folder, files or a glob) to calibrate static int8 quantisation and "
            "to measure top-1 agreement with the fp32 model (default: generated photos).",
            rich_help_panel="ONNX",
        ),
    ] = None,
    min_agreement: Annotated[
        float,
        typer.Option(
            "--min-agreement",
            min=0.0,
            max=1.0,
            help="ONNX: fail unless this fraction of the photos get the fp32 PyTorch model's "
            "top-1 class.",
            rich_help_panel="ONNX",
        ),
    ] = 0.98,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Reload the export as a user would (fresh Python, no biotrove) and compare "
            "embeddings with the source.",
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing export in DIR (only once the new one is complete)."
        ),
    ] = False,
    text_type: Annotated[
        TextTypeChoice,
        typer.Option(
            "--text-type",
            case_sensitive=False,
            help="Class text of the bundled label embeddings (classify's default too).",
            rich_help_panel="Labels",
        ),
    ] = TextTypeChoice(DEFAULT_CAPTION),  # type: ignore[assignment]
    templates: Annotated[
        str,
        typer.Option(
            "--templates",
            metavar="SET",
            help="Prompt templates of the bundled embeddings: simple, openai, or a file.",
            rich_help_panel="Labels",
        ),
    ] = "simple",
    device: DeviceOpt = "cpu",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Prompts per forward pass when encoding the label bank.",
            rich_help_panel="Compute",
        ),
    ] = 256,
    report: Annotated[
        ReportFormat,
        typer.Option(
            "--report",
            case_sensitive=False,
            help="Summary on stdout: auto = a table on a terminal, CSV when piped.",
            rich_help_panel="Output",
        ),
    ] = ReportFormat.auto,
    summary: SummaryOpt = None,
) -> None:
    """Turn a checkpoint into a safe, portable, verified model bundle.

    Stock open_clip loads the bundle: create_model_and_transforms("local-dir:DIR").
    Safetensors weights (no pickle, no optimizer state); biotrove.json records the source.
    With --labels, `biotrove classify --model DIR` needs no other file.
    """
    from biotrove_cli.core.models.export import ExportConfig, export_model
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.output.progress import progress
    from biotrove_cli.output.render import emit

    cfg = ExportConfig(
        source=checkpoint,
        out=out,
        dtype=dtype,
        format=format,
        labels=labels,
        arch=arch,
        text_type=text_type.value,
        templates=templates,
        verify=verify,
        force=force,
        quantize=quantize.value if quantize is not None else None,
        calibration=calibration,
        min_agreement=min_agreement,
        device=resolve_device(device),
        batch_size=batch_size,
    )
    with contextlib.ExitStack() as stack:
        bar: list = []

        def on_progress(done: int, total: int) -> None:
            # the bar opens only if there are label prompts to encode
            if not bar:
                bar.append(stack.enter_context(progress("Encoding class prompts", total)))
            bar[0](done, total)

        result = export_model(cfg, progress=on_progress)
    emit(
        result.records(),
        report.value,
        None,
        title=f"export: {result.out}",
        columns=["section", "key", "value"],
        summary=result.document(),
        summary_path=summary,
    )
