"""``biotrove eval``: zero-shot accuracy at every taxonomic rank, in one pass per model
(``--nproc-per-node N`` runs the ranks through torchrun: :mod:`biotrove_cli.cli.workers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from biotrove_cli.cli.options import (
    AutoWorkersOpt,
    BatchSizeOpt,
    DeviceOpt,
    FormatOpt,
    LabelsOpt,
    ModeChoice,
    ModelsOpt,
    OutputOpt,
    PrecisionChoice,
    PrecisionOpt,
    SummaryOpt,
)
from biotrove_cli.cli.workers import MODULE as WORKER_MODULE
from biotrove_cli.output import console
from biotrove_cli.output.render import Format

DATA = "Data"
SCORING = "Scoring"
REPORTS = "Reports"


# long only by its option declarations (Typer reads them from the signature); the body is
# flags -> EvalConfig -> run_eval -> render_eval
def eval_cmd(
    model: ModelsOpt,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            metavar="DATA",
            help="A shard folder (its --split), split folder, .tar or brace pattern (local, "
            "http(s)://, s3://, gs:// or pipe:COMMAND); a CSV/Parquet table (BioTrove/VLHub "
            "metadata: lineage and/or --label-col, an image path column, --images); or a folder "
            "of class subfolders (ImageFolder).",
            rich_help_panel=DATA,
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            metavar="DIR",
            help="Folder of the table's images: paths are looked up under it as written, "
            "else as the longest suffix of the path that exists (cluster paths).",
            rich_help_panel=DATA,
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option("--split", help="Split of a shard folder.", rich_help_panel=DATA),
    ] = "val",
    label_col: Annotated[
        str | None,
        typer.Option(
            "--label-col",
            metavar="COL",
            help="The table's column of class names (scientific_name, class, class_out...): "
            "scientific names are species (scored at every rank the lineage has), other names "
            "a level of their own ('label').",
            rich_help_panel=DATA,
        ),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            "--candidates",
            metavar="COL",
            help="Score each photo only against its own candidate names in COL (joined by "
            "'!', e.g. class_options): top-1 per group and overall, with chance.",
            rich_help_panel=DATA,
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            metavar="COL",
            help="Group candidate-set results by COL (e.g. pair); macro = mean of groups.",
            rich_help_panel=DATA,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Evaluate the first N samples only.", rich_help_panel=DATA
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at a shard that cannot be read or ends early (default: count it).",
            rich_help_panel=DATA,
        ),
    ] = False,
    ranks: Annotated[
        str,
        typer.Option(
            "--ranks",
            metavar="auto|all|RANK,...",
            help="Ranks to score (kingdom,phylum,class,order,family,genus,species); auto: "
            "every rank the data names (species alone without lineage columns).",
            rich_help_panel=SCORING,
        ),
    ] = "auto",
    mode: Annotated[
        ModeChoice,
        typer.Option(
            "--mode",
            case_sensitive=False,
            help="rollup: species probabilities summed into higher taxa; prompt: each rank's "
            "taxa as their own text prompts (the reference way); both.",
            rich_help_panel=SCORING,
        ),
    ] = ModeChoice.rollup,
    text_type: Annotated[
        str,
        typer.Option(
            "--text-type",
            metavar="TYPE[,TYPE...]|all",
            help="Class text: taxon, taxon_com, sci, com, sci_com, taxonTag, ...; several "
            "(or all: sci,com,taxon,sci_com,taxon_com) score each from one image pass.",
            rich_help_panel=SCORING,
        ),
    ] = "taxon_com",
    templates: Annotated[
        str,
        typer.Option(
            "--templates",
            metavar="simple|openai|FILE",
            help="Prompt templates: 'a photo of {}.', the 80 OpenAI ImageNet ones, or a file "
            "with one template per line.",
            rich_help_panel=SCORING,
        ),
    ] = "simple",
    labels: LabelsOpt = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Encode class texts afresh (the cache is keyed by weights + prompts).",
            rich_help_panel=SCORING,
        ),
    ] = False,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch", metavar="NAME", help="open_clip architecture when it cannot be inferred."
        ),
    ] = None,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = PrecisionChoice.auto,
    workers: AutoWorkersOpt = None,
    nproc_per_node: Annotated[
        int,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Processes (one per GPU) through torchrun; shards are split across them.",
            rich_help_panel="Compute",
        ),
    ] = 1,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
    summary: SummaryOpt = None,
    per_class: Annotated[
        Path | None,
        typer.Option(
            "--per-class",
            metavar="FILE.csv",
            help="Write per-class support, recall and precision.",
            rich_help_panel=REPORTS,
        ),
    ] = None,
    confusion: Annotated[
        str | None,
        typer.Option(
            "--confusion",
            metavar="RANK:FILE.csv",
            help="Write the confusion matrix at RANK (non-zero cells: truth, predicted, count).",
            rich_help_panel=REPORTS,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Bar chart of top-1 accuracy by rank (needs matplotlib: biotrove[plot]).",
            rich_help_panel=REPORTS,
        ),
    ] = None,
) -> None:
    """Zero-shot accuracy of one or more models at every taxonomic rank, in one image pass.

    Top-1, top-5 and balanced accuracy (mean per-class recall) per rank, with 95% CIs,
    and how deep wrong species predictions still agree with the truth.

    Examples:

      biotrove eval -m clip-o --data shards/ --split unseen

      biotrove eval -m run1/ -m run2/ --data lifestages.csv --images photos/ --mode both

      biotrove eval -m model/ --data shards/ --per-class pc.csv --plot acc.png

      biotrove eval -m model/ --data shards/ --confusion genus:confusion.csv

      biotrove eval -m model/ --data confounding_species.csv --images confounding/
      --candidates class_options --group-by pair

      biotrove eval -m model/ --data shards/ --text-type all --plot sweep.png
    """
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.evaluation.config import EvalConfig
    from biotrove_cli.core.evaluation.run import run_eval
    from biotrove_cli.core.evaluation.zeroshot import parse_modes
    from biotrove_cli.core.models.spec import backend_of
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.core.taxonomy.rank import Rank
    from biotrove_cli.output import progress
    from biotrove_cli.output.eval_tables import render_eval
    from biotrove_cli.output.render import resolve_format

    fmt = resolve_format(format, output)  # usage errors before any work
    conf = None
    if confusion:
        rank_text, sep, path = confusion.partition(":")
        if not sep or not path:
            raise UsageError(
                f"--confusion {confusion!r}: expected RANK:FILE",
                hint="e.g. --confusion genus:cm.csv",
            )
        conf = (Rank.parse(rank_text), path)
    cfg = EvalConfig(
        models=list(model),
        data=data,
        images=str(images) if images else None,
        split=split,
        labels=str(labels) if labels else None,
        ranks=None if ranks.strip().lower() == "auto" else Rank.parse_list(ranks),
        modes=parse_modes(mode.value),
        text_type=text_type,
        templates=templates,
        batch_size=batch_size,
        device=device,
        precision=precision.value,
        workers=workers,
        limit=limit,
        use_cache=not no_cache,
        per_class=str(per_class) if per_class else None,
        confusion=conf,
        plot=str(plot) if plot else None,
        arch=arch,
        strict=strict,
        label_col=label_col,
        candidates=candidates,
        group_by=group_by,
    )
    text_types = cfg.text_types  # an unknown text type is a usage error before any work
    if conf is not None and cfg.ranks is not None and conf[0] not in cfg.ranks:
        raise UsageError(
            f"--confusion {conf[0].value}: that rank is not among --ranks {ranks}",
            hint="add it to --ranks",
        )
    backends = {backend_of(m) for m in cfg.models}
    cfg.device = resolve_device(cfg.device, backend="onnx" if backends == {"onnx"} else "torch")
    if "onnx" in backends and nproc_per_node > 1:
        raise UsageError(
            f"--nproc-per-node {nproc_per_node}: an ONNX bundle is evaluated in one process",
            hint="drop --nproc-per-node (onnxruntime uses every core of this process)",
        )
    if nproc_per_node > 1:
        console.step(f"evaluating on {nproc_per_node} processes through torchrun ({cfg.device})")
        payload = run_eval(
            cfg,
            nproc=nproc_per_node,
            worker=(WORKER_MODULE, "eval", *console.worker_flags()),
        )
    else:
        what = (
            f"candidates {candidates}"
            if candidates
            else f"ranks {ranks}, {'+'.join(m.value for m in cfg.modes)}"
        )
        console.step(
            f"evaluating {len(cfg.models)} model(s) on {cfg.data} ({cfg.device}, {what}, "
            f"text {','.join(text_types)})"
        )
        with progress.progress("eval", unit="images") as cb:
            payload = run_eval(cfg, cb)
    render_eval(payload, fmt, output, summary)
