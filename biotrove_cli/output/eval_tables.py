"""The tables of ``biotrove eval``: accuracy per rank with 95% CIs and chance, a text-type sweep
(text types x ranks), candidate-set accuracy per group, and how deep wrong species predictions
still agree with the truth; long-format records for programs."""

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


def _level(rank: str, doc: dict[str, Any]) -> str:
    return f"label ({doc.get('label_col')})" if rank == "label" else rank


def _templates(doc: dict[str, Any]) -> str:
    return f"templates {doc['templates']} ({doc['n_templates']})"


def metrics_table(payload: dict[str, Any]):
    """Ranks as rows; classes, chance and images once; per (model, mode) top-1, top-5 and
    balanced accuracy."""
    records, doc = payload["records"], payload["document"]
    groups = _groups(records)
    modes = {m for _, m in groups}
    title = (
        f"Zero-shot accuracy (%) on {Path(str(doc['data'])).name}: "
        f"{doc['labels']['n_species']} species, text {doc['text_type']}, {_templates(doc)}"
    )
    table = Table(
        title=title,
        caption="(low-high): 95% CI, Wilson score for top-1/top-5, normal approx. for "
        "balanced; chance: 1/classes",
        header_style="bold",
    )
    table.add_column("rank")
    table.add_column("classes", justify="right")
    table.add_column("chance", justify="right")
    table.add_column("images", justify="right")
    for model, mode in groups:
        head = model if len(modes) == 1 else f"{model} ({mode})"
        table.add_column(f"{head}\ntop-1", justify="right", min_width=min(len(head), 24))
        table.add_column("\ntop-5", justify="right")
        table.add_column("\nbalanced", justify="right")
    by_key = {(r["model"], r["mode"], r["rank"]): r for r in records}
    for rank in _unique(r["rank"] for r in records):
        first = by_key[(*groups[0], rank)]
        cells = [
            _level(rank, doc),
            str(first["n_classes"]),
            _pct(first.get("chance")),
            str(first["n_images"]),
        ]
        for model, mode in groups:
            r = by_key[(model, mode, rank)]
            cells += [
                _with_ci(r, "top1"),
                _with_ci(r, "top5"),
                _with_ci(r, "balanced_accuracy"),
            ]
        table.add_row(*cells)
    return table


def _unique(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))


def sweep_table(payload: dict[str, Any]):
    """A text-type sweep: a row per model (x mode) x text type, top-1 with its CI per rank."""
    records, doc = payload["records"], payload["document"]
    ranks = _unique(r["rank"] for r in records)
    models = _unique(r["model"] for r in records)
    modes = _unique(r["mode"] for r in records)
    table = Table(
        title=f"Zero-shot top-1 (%) by text type on {Path(str(doc['data'])).name}: "
        f"{doc['labels']['n_species']} species, {_templates(doc)}",
        caption="(low-high): 95% Wilson CI; chance: 1/classes",
        header_style="bold",
    )
    if len(models) > 1:
        table.add_column("model")
    if len(modes) > 1:
        table.add_column("mode")
    table.add_column("text type")
    for rank in ranks:
        table.add_column(_level(rank, doc), justify="right")
    by_key = {(r["model"], r["mode"], r["text_type"], r["rank"]): r for r in records}
    lead = len(models) > 1, len(modes) > 1
    first = records[0]
    chance = [_pct(by_key[(first["model"], first["mode"], first["text_type"], k)].get("chance"))
              for k in ranks]  # fmt: skip
    table.add_row(*([""] * sum(lead)), "chance", *chance, end_section=True)
    for i, model in enumerate(models):
        types = _unique(r["text_type"] for r in records if r["model"] == model)
        rows = [(mode, text_type) for mode in modes for text_type in types]
        for n, (mode, text_type) in enumerate(rows):
            cells = [model if n == 0 else ""] if lead[0] else []
            cells += [mode if text_type == types[0] else ""] if lead[1] else []
            cells.append(text_type)
            cells += [_with_ci(by_key[(model, mode, text_type, r)], "top1") for r in ranks]
            table.add_row(*cells, end_section=n == len(rows) - 1 and i < len(models) - 1)
    return table


def candidates_table(payload: dict[str, Any]):
    """Candidate sets: a row per group, then the macro and micro averages; photos scored,
    chance and those left out once; top-1 with its CI per model (x text type)."""
    records, doc = payload["records"], payload["document"]
    heads = _unique((r["model"], r["text_type"]) for r in records)
    sweep = len({t for _, t in heads}) > 1
    by_group = doc.get("group_by")
    title = (
        f"Candidate-set top-1 (%) on {Path(str(doc['data'])).name}: each photo against its "
        f"own candidates ({doc.get('candidates_col')})"
        + (f" by {by_group}" if by_group else "")
        + ("" if sweep else f", text {heads[0][1]}")
        + f", {_templates(doc)}"
    )
    table = Table(
        title=title,
        caption="macro: mean of the groups; micro: all photos; (low-high): 95% CI, Wilson "
        "score (macro: normal approx.); chance: mean of 1/candidates",
        header_style="bold",
    )
    table.add_column(by_group or "")
    table.add_column("photos", justify="right")
    table.add_column("chance", justify="right")
    table.add_column("not among\ncandidates", justify="right")
    for model, text_type in heads:
        table.add_column(f"{model} ({text_type})" if sweep else model, justify="right")
    by_key = {(r["model"], r["text_type"], r["scope"], r["group"]): r for r in records}
    for scope, group in _unique((r["scope"], r["group"]) for r in records):
        first = by_key[(*heads[0], scope, group)]
        cells = [
            scope if scope != "group" else group or "all",
            str(first["n_images"]),
            _pct(first.get("chance")),
            str(first["n_not_in_candidates"]),
        ]
        cells += [_with_ci(by_key[(m, t, scope, group)], "top1") for m, t in heads]
        table.add_row(*cells, end_section=scope == "group" and group == _last_group(records))
    return table


def _last_group(records: list[dict[str, Any]]) -> str | None:
    groups = [r["group"] for r in records if r["scope"] == "group"]
    return groups[-1] if groups else None


def severity_table(payload: dict[str, Any]):
    """Wrong species predictions by the deepest rank they still share with the truth."""
    from biotrove_cli.core.evaluation.metrics import SEVERITY_KEYS

    rows = payload.get("severity") or []
    if not rows:
        return None
    modes = {r["mode"] for r in rows}
    types = {r.get("text_type") for r in rows}
    table = Table(
        title="Wrong species predictions: deepest rank shared with the truth",
        header_style="bold",
    )
    table.add_column("shared down to")
    for r in rows:
        tags = [r["mode"]] if len(modes) > 1 else []
        tags += [r["text_type"]] if len(types) > 1 else []
        head = f"{r['model']} ({', '.join(tags)})" if tags else r["model"]
        table.add_column(head, justify="right")
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


def _per_model(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per model: a sweep's text types share the image pass, so their class-text
    times and cache hits add up."""
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        if m["model"] not in out:
            out[m["model"]] = {**m, "timings": dict(m.get("timings", {})), "text_cache": {}}
        else:
            t = out[m["model"]]["timings"]
            t["text_s"] = round((t.get("text_s") or 0) + (m["timings"].get("text_s") or 0), 3)
        cache = out[m["model"]]["text_cache"]
        for k, v in (m.get("text_cache") or {}).items():
            cache[f"{m.get('text_type')}:{k}"] = v
    return list(out.values())


def render_eval(
    payload: dict[str, Any], fmt: Format, output: str | None, summary_path: Any = None
) -> None:
    """Tables for people; long-format records (one per model x text type x mode x rank, or per
    candidate-set group) for programs; the document (data, labels, models, timings) to
    ``summary_path`` (JSON) in either case."""
    for line in payload.get("info", []):
        console.info(line)
    for note in payload.get("notes", []):
        console.warn(note)
    for m in _per_model(payload["document"].get("models", [])):
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
        records = payload["records"]
        if records and "scope" in records[0]:
            tables = [candidates_table(payload)]
        elif len(payload["document"].get("text_types") or [1]) > 1:
            tables = [sweep_table(payload), severity_table(payload)]
        else:
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
