"""The tables of ``biotrove eval``: accuracy per rank with 95% CIs, and how deep wrong species
predictions still agree with the truth; long-format records for programs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from biotrove_cli.output import console
from biotrove_cli.output.render import Format, emit, write_summary


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


def render_eval(
    payload: dict[str, Any], fmt: Format, output: str | None, summary_path: Any = None
) -> None:
    """Tables for people; long-format records (one per model x mode x rank) for programs; the
    document (data, labels, models, timings) to ``summary_path`` (JSON) in either case."""
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
        if summary_path is not None:
            write_summary(summary_path, payload["document"])
        return
    emit(
        payload["records"],
        fmt,
        output,
        summary=payload["document"],
        summary_path=summary_path,
    )
