"""Every shared option type and its choice enum: the same flag means the same thing in every
command, and is declared once here (``--workers`` once per meaning: decoding workers of eval and
classify, writer processes of shard, data workers of train)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from biotrove_cli.core.taxonomy.rank import Rank
from biotrove_cli.output.render import Format

FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        case_sensitive=False,
        help="auto = a table on a terminal, CSV when piped or by -o's suffix.",
        rich_help_panel="Output",
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write records to FILE ('-' = stdout).",
        rich_help_panel="Output",
    ),
]
SummaryOpt = Annotated[
    Path | None,
    typer.Option(
        "--summary",
        metavar="FILE",
        help="Also write the run's summary (counts, timings, provenance) to FILE as JSON.",
        rich_help_panel="Output",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="cpu, cuda, cuda:N, mps or auto (cuda, then mps, when available).",
        rich_help_panel="Compute",
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", min=1, help="Images per forward pass.", rich_help_panel="Compute"),
]
WriterWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        metavar="N",
        help="Writer processes (0 or 1 = in this process). Default: CPU cores, up to 8.",
        show_default=False,
        rich_help_panel="Compute",
    ),
]
DataWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        metavar="N",
        help="Data loading workers per process (0 = in the training process).",
        show_default=False,
        rich_help_panel="Compute",
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Checkpoint (.pt), exported folder, run folder, clip-o|clip-b|clip-m, "
        "hf-hub:org/repo or ARCH:TAG.",
    ),
]
ModelsOpt = Annotated[
    list[str],
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Checkpoint, exported folder, run folder, clip-o|clip-b|clip-m, hf-hub:org/repo "
        "or ARCH:TAG. Repeat to compare models side by side.",
    ),
]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        metavar="NAME|FILE",
        help="Label bank: a shipped one (inat2021, demo), a metadata table (Parquet/CSV), a "
        "shard folder, or a .txt list of names.",
    ),
]
ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        metavar="NAME",
        help="open_clip architecture of the weights (e.g. ViT-B-16-quickgelu) when it "
        "cannot be inferred.",
    ),
]


class RankChoice(str, Enum):
    kingdom = "kingdom"
    phylum = "phylum"
    class_ = "class"
    order = "order"
    family = "family"
    genus = "genus"
    species = "species"

    def to_rank(self) -> Rank:
        return Rank(self.value)


RankOpt = Annotated[
    RankChoice,
    typer.Option(
        "--rank",
        case_sensitive=False,
        help="Rank to predict; higher ranks sum their species' probabilities.",
    ),
]


# -- inference (eval, classify, embed) ----------------------------------------------------------
LABELS_PANEL = "Labels"
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subfolders.")]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict", help="Stop at the first unreadable image (exit 1)."),
]
ClassTextTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--text-type",
        help="Class text type (taxon_com, taxon, sci, com...). Default: what a bundle's "
        "class embeddings were made with, else taxon_com.",
        rich_help_panel=LABELS_PANEL,
    ),
]
ClassTemplatesOpt = Annotated[
    str | None,
    typer.Option(
        "--templates",
        metavar="simple|openai|FILE",
        help="Prompt templates. Default: the bundle's, else simple.",
        rich_help_panel=LABELS_PANEL,
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Encode class texts afresh.", rich_help_panel=LABELS_PANEL),
]


class ModeChoice(str, Enum):
    rollup = "rollup"
    prompt = "prompt"
    both = "both"


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


AutoWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        metavar="N",
        help="Image decoding worker processes (0 = in-process). Default auto: on CUDA all "
        "cores but one; on a CPU a quarter of the cores for large image towers, half for "
        "small ones; the model's threads get the rest.",
        show_default=False,
        rich_help_panel="Compute",
    ),
]
PrecisionOpt = Annotated[
    PrecisionChoice,
    typer.Option(
        "--precision",
        case_sensitive=False,
        help="auto = bf16 autocast on CUDA, fp32 on CPU; bf16 on CPU runs a bf16 copy of the "
        "image tower (fast on CPUs with AMX, slightly different scores).",
        rich_help_panel="Compute",
    ),
]


# -- training ------------------------------------------------------------------------------------
ReportToOpt = Annotated[
    str | None,
    typer.Option(
        "--report-to",
        metavar="TRACKERS",
        help="Experiment trackers besides metrics.jsonl: any of tensorboard, wandb, mlflow "
        "(comma list; none = off). wandb works offline with WANDB_MODE=offline; mlflow "
        "writes to $MLFLOW_TRACKING_URI, else a file store in the run folder (mlruns/).",
        show_default=False,
        rich_help_panel="Tracking",
    ),
]


def report_to_list(value: str | None) -> list[str] | None:
    """``--report-to a,b`` -> the tracker list for ``tracking.report_to`` (None: not given)."""
    from biotrove_cli.core.training.trackers import parse_report_to

    return None if value is None else parse_report_to([value])


class TrainPrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    amp = "amp"
    amp_bf16 = "amp_bf16"
    bf16 = "bf16"
    pure_bf16 = "pure_bf16"


TrainPrecisionOpt = Annotated[
    TrainPrecisionChoice | None,
    typer.Option(
        "--precision",
        case_sensitive=False,
        help="auto = amp_bf16 on CUDA, fp32 on CPU.",
        show_default=False,
        rich_help_panel="Compute",
    ),
]
