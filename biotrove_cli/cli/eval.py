"""``biotrove eval``: zero-shot accuracy at every taxonomic rank, in one pass per model.

Also the entry point torchrun starts on each rank for ``--nproc-per-node N``:
``python -m biotrove_cli.cli.eval --worker-config CFG.json --worker-result OUT.json``.
"""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from biotrove_cli.cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    FormatOpt,
    LabelsOpt,
    OutputOpt,
)
from biotrove_cli.output import console
from biotrove_cli.output.render import Format

DATA = "Data"
SCORING = "Scoring"
REPORTS = "Reports"


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


def eval_cmd(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help="Checkpoint, exported folder, run folder, clip-o|clip-b|clip-m, hf-hub:org/repo "
            "or ARCH:TAG. Repeat to compare models side by side.",
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            metavar="DATA",
            help="A shard folder (its --split), split folder, .tar or brace pattern; or a "
            "CSV/Parquet table with lineage and an image path column (with --images).",
            rich_help_panel=DATA,
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            metavar="DIR",
            help="Folder of the table's images (paths are looked up under it).",
            rich_help_panel=DATA,
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option("--split", help="Split of a shard folder.", rich_help_panel=DATA),
    ] = "val",
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Evaluate the first N samples only.", rich_help_panel=DATA
        ),
    ] = None,
    ranks: Annotated[
        str,
        typer.Option(
            "--ranks",
            metavar="all|RANK,...",
            help="Ranks to score (kingdom,phylum,class,order,family,genus,species).",
            rich_help_panel=SCORING,
        ),
    ] = "all",
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
            help="Class text: taxon, taxon_com, sci, com, sci_com, taxonTag, ...",
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
    """
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.evaluation.engine import EvalConfig
    from biotrove_cli.core.evaluation.zeroshot import parse_modes
    from biotrove_cli.core.taxonomy.rank import Rank
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
        ranks=Rank.parse_list(ranks),
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
    )
    if conf is not None and conf[0] not in cfg.ranks:
        raise UsageError(
            f"--confusion {conf[0].value}: that rank is not among --ranks {ranks}",
            hint="add it to --ranks",
        )
    if nproc_per_node > 1:
        payload = _run_distributed(cfg, nproc_per_node)
    else:
        payload = _run_local(cfg)
    render(payload, fmt, output)


def _run_local(cfg: Any) -> dict[str, Any]:
    from biotrove_cli.core.evaluation.engine import evaluate
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.output import progress

    cfg.device = resolve_device(cfg.device)
    console.step(
        f"evaluating {len(cfg.models)} model(s) on {cfg.data} ({cfg.device}, "
        f"ranks {','.join(r.value for r in cfg.ranks)}, {'+'.join(m.value for m in cfg.modes)})"
    )
    with progress.progress("eval", unit="images") as cb:
        result = evaluate(cfg, cb)
    assert result is not None
    return result.payload()


def _run_distributed(cfg: Any, nproc: int) -> dict[str, Any]:
    import tempfile

    from biotrove_cli.core.distributed.launch import LaunchConfig, LaunchError, launch
    from biotrove_cli.core.io import atomic_write_json, read_json
    from biotrove_cli.core.runtime import resolve_device

    cfg.device = resolve_device(cfg.device)
    console.step(f"evaluating on {nproc} processes through torchrun ({cfg.device})")
    with tempfile.TemporaryDirectory(prefix="biotrove-eval-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        result_path = Path(tmp) / "result.json"
        atomic_write_json(cfg_path, cfg.to_dict())
        args = ["--worker-config", str(cfg_path), "--worker-result", str(result_path)]
        if console.STATE.quiet:
            args.append("--quiet")
        try:
            launch("biotrove_cli.cli.eval", args, LaunchConfig(nproc_per_node=nproc))
        except LaunchError as exc:
            raise LaunchError(
                exc.message, hint="the failing rank's error is printed above; fix it and rerun"
            ) from None
        return read_json(result_path)


# -- rendering ---------------------------------------------------------------------------------
def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}"


def _with_ci(rec: dict[str, Any], key: str) -> str:
    v = rec.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{_pct(v)} ({_pct(rec.get(key + '_ci_low'))}-{_pct(rec.get(key + '_ci_high'))})"


def _groups(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in records:
        g = (r["model"], r["mode"])
        if g not in seen:
            seen.append(g)
    return seen


def metrics_table(payload: dict[str, Any]):
    """Ranks as rows; classes and images once; per (model, mode) top-1, top-5 and balanced."""
    from rich.table import Table

    records, doc = payload["records"], payload["document"]
    groups = _groups(records)
    modes = {m for _, m in groups}
    title = (
        f"Zero-shot accuracy (%) on {Path(str(doc['data'])).name}: "
        f"{doc['labels']['n_species']} species, text {doc['text_type']}, "
        f"templates {doc['templates']} ({doc['n_templates']})"
    )
    table = Table(
        title=title,
        caption="(low-high): 95% CI, Wilson score for top-1/top-5, normal approx. for balanced",
        header_style="bold",
    )
    table.add_column("rank")
    table.add_column("classes", justify="right")
    table.add_column("images", justify="right")
    for model, mode in groups:
        head = model if len(modes) == 1 else f"{model} ({mode})"
        table.add_column(f"{head}\ntop-1", justify="right", min_width=min(len(head), 24))
        table.add_column("\ntop-5", justify="right")
        table.add_column("\nbalanced", justify="right")
    by_key = {(r["model"], r["mode"], r["rank"]): r for r in records}
    for rank in doc["ranks"]:
        first = by_key[(*groups[0], rank)]
        cells = [rank, str(first["n_classes"]), str(first["n_images"])]
        for model, mode in groups:
            r = by_key[(model, mode, rank)]
            cells += [
                _with_ci(r, "top1"),
                _with_ci(r, "top5"),
                _with_ci(r, "balanced_accuracy"),
            ]
        table.add_row(*cells)
    return table


def severity_table(payload: dict[str, Any]):
    """Wrong species predictions by the deepest rank they still share with the truth."""
    from rich.table import Table

    from biotrove_cli.core.evaluation.metrics import SEVERITY_KEYS

    rows = payload.get("severity") or []
    if not rows:
        return None
    modes = {r["mode"] for r in rows}
    table = Table(
        title="Wrong species predictions: deepest rank shared with the truth",
        header_style="bold",
    )
    table.add_column("shared down to")
    for r in rows:
        table.add_column(
            r["model"] if len(modes) == 1 else f"{r['model']} ({r['mode']})", justify="right"
        )
    for key in reversed(SEVERITY_KEYS):
        label = "no rank" if key == "none" else key
        cells = [label]
        for r in rows:
            n, total = r[f"mistakes_deepest_{key}"], r["mistakes"]
            cells.append(f"{n} ({100 * n / total:.0f}%)" if total else "0")
        table.add_row(*cells)
    cells = ["mean shared ranks (0-6)"]
    for r in rows:
        v = r["mistake_shared_ranks_mean"]
        cells.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}")
    table.add_row(*cells, end_section=True)
    table.add_row("wrong species predictions", *[str(r["mistakes"]) for r in rows])
    return table


def render(payload: dict[str, Any], fmt: Format, output: str | None) -> None:
    """Tables for people; long-format records (one per model x mode x rank) for programs."""
    from biotrove_cli.output.render import emit

    for note in payload.get("notes", []):
        console.warn(note)
    for m in payload["document"].get("models", []):
        t = m.get("timings", {})
        cache = m.get("text_cache") or {}
        hits = sum(1 for v in cache.values() if v)
        console.info(
            f"{m['model']}: {m['n_images']} images in {t.get('images_s')} s "
            f"({t.get('images_per_s')} images/s), model load {t.get('load_s')} s, class texts "
            f"{t.get('text_s')} s ({hits}/{len(cache)} from the cache), {m.get('precision')}"
        )
    for what, path in (payload.get("files") or {}).items():
        console.info(f"wrote {what.replace('_', '-')}: {path}")
    if fmt is Format.table:
        tables = [metrics_table(payload), severity_table(payload)]
        tables = [t for t in tables if t is not None]
        if output is None or output == "-":
            for t in tables:
                console.out().print(t)
        else:
            import io

            from rich.console import Console

            from biotrove_cli.core.io import atomic_write_text

            buf = io.StringIO()
            c = Console(file=buf, width=200, force_terminal=False)
            for t in tables:
                c.print(t)
            atomic_write_text(output, buf.getvalue())
        return
    emit(payload["records"], fmt, output, document=payload["document"])


# -- the distributed worker ----------------------------------------------------------------------
def _worker_main(argv: list[str] | None = None) -> int:
    """One torchrun rank: join the group, evaluate its share, rank 0 writes the result file."""
    import argparse

    parser = argparse.ArgumentParser(prog="biotrove-eval-worker")
    parser.add_argument("--worker-config", required=True, type=Path)
    parser.add_argument("--worker-result", required=True, type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    console.configure(quiet=args.quiet)
    from biotrove_cli.cli._worker import worker_boundary
    from biotrove_cli.core.distributed.env import destroy_process_group, init_process_group
    from biotrove_cli.core.evaluation.engine import EvalConfig, evaluate
    from biotrove_cli.core.io import atomic_write_json, read_json
    from biotrove_cli.output import progress

    def body() -> None:
        cfg = EvalConfig.from_dict(read_json(args.worker_config))
        device_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
        env = init_process_group(device_type)
        if device_type == "cuda":
            import torch

            cfg.device = f"cuda:{env.local_rank}"
            torch.cuda.set_device(env.local_rank)
        with progress.progress("eval", unit="images") as cb:
            result = evaluate(cfg, cb, rank=env.rank, world_size=env.world_size)
        if result is not None:
            atomic_write_json(args.worker_result, result.payload())
        destroy_process_group()

    return worker_boundary(body)


if __name__ == "__main__":
    sys.exit(_worker_main())
