"""The evaluation section of a report, from what ``biotrove eval`` writes: its records (one per
model x text type x mode x rank, or per candidate-set group), its ``--summary`` document, its
``--per-class`` and ``--confusion`` CSVs; any of them may be missing.

Shown: top-1 accuracy by rank with 95% intervals and the chance level (a panel per model and
mode when several name styles were scored), candidate-set accuracy per group, how deep wrong
species predictions still share the truth's lineage; and, from :mod:`.classes`, per-class
recall worst first and the confusion at a rank as a heat map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.evaluation.metrics import SEVERITY_KEYS
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.report.classes import confusion_block, per_class_block
from biotrove_cli.core.report.figures import (
    BarChart,
    BarSeries,
    Block,
    Column,
    Interval,
    Section,
    Table,
)
from biotrove_cli.core.report.names import Key, level_label, num, series_keys, series_names, unique

SEVERITY_LEVELS = tuple(reversed(SEVERITY_KEYS))  # genus (a near miss) ... none (all wrong)


def build_eval(
    records: list[dict[str, Any]],
    summary: dict[str, Any] | None = None,
    per_class: list[dict[str, Any]] | None = None,
    confusion: list[dict[str, Any]] | None = None,
    *,
    sources: list[str] | None = None,
    max_classes: int = 25,
    max_confusion: int = 20,
) -> Section:
    """The section of one evaluation (see the module docstring)."""
    summary = summary or {}
    section = Section("eval", _title(records, summary, sources or []), list(sources or []))
    section.facts = _facts(summary)
    section.notes = _notes(records, summary)
    if records and "scope" in records[0]:
        section.blocks.append(candidates_block(records, summary))
    elif records:
        section.blocks.append(accuracy_block(records, summary))
        severity = severity_block(records)
        if severity is not None:
            section.blocks.append(severity)
    if summary.get("models"):
        section.blocks.append(_models_block(summary["models"]))
    if per_class:
        section.blocks.append(per_class_block(per_class, summary, max_classes))
    if confusion:
        section.blocks.append(confusion_block(confusion, max_confusion))
    return section


def _interval(rec: dict[str, Any], key: str, n_key: str = "n_images") -> Interval:
    return Interval(
        value=num(rec.get(key)),
        low=num(rec.get(f"{key}_ci_low")),
        high=num(rec.get(f"{key}_ci_high")),
        n=rec.get(n_key),
        k=rec.get("n_correct_top1") if key == "top1" else None,
    )


# -- accuracy by rank ----------------------------------------------------------------------------
def accuracy_block(records: list[dict[str, Any]], summary: dict[str, Any]) -> Block:
    """Top-1 by rank with its interval and chance: one chart, or one panel per (model, mode)
    with a bar per text type when several name styles were scored; and the table of top-1,
    top-5 and balanced accuracy."""
    ranks = unique(r["rank"] for r in records)
    labels = {r: level_label(r, summary) for r in ranks}
    chance = {r["rank"]: c for r in records if (c := num(r.get("chance"))) is not None}
    keys = series_keys(records)
    text_types = unique(k[2] for k in keys)
    by_key = {
        (r["model"], r.get("mode") or "", r.get("text_type") or "", r["rank"]): r for r in records
    }
    sweep = len(text_types) > 1
    block = Block(
        "Accuracy by rank and name style" if sweep else "Accuracy by rank",
        text="Top-1 accuracy: bars with their 95% Wilson interval; the dashed mark is chance "
        "(1 / classes at that rank).",
    )
    if sweep:
        panels = unique((k[0], k[1]) for k in keys)
        vary_mode = len({m for _, m in panels}) > 1
        for model, mode in panels:
            series = [
                BarSeries(
                    t,
                    {
                        r: _interval(by_key[(model, mode, t, r)], "top1")
                        for r in ranks
                        if (model, mode, t, r) in by_key
                    },
                )
                for t in text_types
            ]
            title = f"{model} ({mode})" if vary_mode else model
            block.figures.append(
                BarChart(
                    f"Top-1 by name style: {title}",
                    ranks,
                    series,
                    labels,
                    chance,
                    y_label="top-1 accuracy",
                )
            )
        block.tables.append(_sweep_table(keys, ranks, labels, by_key))
    else:
        names = series_names(keys)
        series = [
            BarSeries(
                names[k],
                {r: _interval(by_key[(*k, r)], "top1") for r in ranks if (*k, r) in by_key},
            )
            for k in keys
        ]
        block.figures.append(
            BarChart(
                "Top-1 accuracy by rank", ranks, series, labels, chance, y_label="top-1 accuracy"
            )
        )
    block.tables.append(_accuracy_table(keys, ranks, labels, by_key))
    return block


def _accuracy_table(keys: list[Key], ranks: list[str], labels: dict[str, str], by_key) -> Table:
    names = series_names(keys)
    cols = [
        Column("rank"),
        Column("classes", "int"),
        Column("chance", "pct"),
        Column("images", "int"),
    ]
    for k in keys:
        prefix = f"{names[k]}: " if len(keys) > 1 else ""
        cols += [
            Column(f"{prefix}top-1", "ci"),
            Column(f"{prefix}top-5", "ci"),
            Column(f"{prefix}balanced", "ci"),
        ]
    rows = []
    for rank in ranks:
        first = next(by_key[(*k, rank)] for k in keys if (*k, rank) in by_key)
        row: list[Any] = [
            labels[rank],
            first.get("n_classes"),
            num(first.get("chance")),
            first.get("n_images"),
        ]
        for k in keys:
            rec = by_key.get((*k, rank), {})
            row += [_ci(rec, "top1"), _ci(rec, "top5"), _ci(rec, "balanced_accuracy")]
        rows.append(row)
    return Table(
        cols,
        rows,
        caption="95% intervals: Wilson score (top-1, top-5), normal "
        "approximation (balanced accuracy, the mean per-class recall)",
    )


def _sweep_table(keys: list[Key], ranks: list[str], labels: dict[str, str], by_key) -> Table:
    """Name styles as rows, ranks as columns; the caption names the best style of each rank."""
    cols = [Column("model"), Column("mode"), Column("name style")]
    cols += [Column(labels[r], "ci") for r in ranks]
    rows = [
        [k[0], k[1], k[2], *[_ci(by_key.get((*k, r), {}), "top1") for r in ranks]] for k in keys
    ]
    best = []
    for i, rank in enumerate(ranks):
        scored = [(row[3 + i][0], row[2]) for row in rows if row[3 + i] is not None]
        if scored:
            best.append(f"{labels[rank]} {max(scored)[1]}")
    caption = "top-1 with its 95% Wilson interval; best name style: " + ", ".join(best)
    return Table(cols, rows, caption=caption)


def _ci(rec: dict[str, Any], key: str) -> tuple[float | None, float | None, float | None] | None:
    if num(rec.get(key)) is None:
        return None
    return (num(rec.get(key)), num(rec.get(f"{key}_ci_low")), num(rec.get(f"{key}_ci_high")))


# -- candidate sets ------------------------------------------------------------------------------
def candidates_block(records: list[dict[str, Any]], summary: dict[str, Any]) -> Block:
    """Each photo scored against its own candidate names: top-1 per group, then the macro
    (mean of groups) and micro (all photos) averages, with chance (mean of 1/candidates)."""
    cats = unique(r.get("group") or r["scope"] for r in records)
    keys = unique((r["model"], r.get("text_type") or "") for r in records)
    vary_text = len({t for _, t in keys}) > 1
    names = {k: f"{k[0]} · {k[1]}" if vary_text else k[0] for k in keys}
    by = {(r["model"], r.get("text_type") or "", r.get("group") or r["scope"]): r for r in records}
    chance = {c: v for (_, _, c), r in by.items() if (v := num(r.get("chance"))) is not None}
    series = [
        BarSeries(names[k], {c: _interval(by[(*k, c)], "top1") for c in cats if (*k, c) in by})
        for k in keys
    ]
    group_by = summary.get("group_by")
    block = Block(
        "Candidate sets",
        text="Each photo scored against its own candidate names"
        + (f" ({summary['candidates_col']})" if summary.get("candidates_col") else "")
        + (f", grouped by {group_by}" if group_by else "")
        + ": top-1 with its 95% interval; macro is the mean of the groups, micro all photos; "
        "the dashed mark is chance (the mean of 1 / candidates).",
    )
    block.figures.append(
        BarChart("Candidate-set top-1", cats, series, {}, chance, y_label="top-1 among candidates")
    )
    cols = [
        Column(group_by or "group"),
        Column("photos", "int"),
        Column("chance", "pct"),
        Column("not among candidates", "int"),
    ]
    cols += [Column(names[k], "ci") for k in keys]
    rows = []
    for c in cats:
        first = next(by[(*k, c)] for k in keys if (*k, c) in by)
        rows.append(
            [
                c,
                first.get("n_images"),
                num(first.get("chance")),
                first.get("n_not_in_candidates"),
                *[_ci(by.get((*k, c), {}), "top1") for k in keys],
            ]
        )
    block.tables.append(Table(cols, rows))
    return block


# -- mistake severity ----------------------------------------------------------------------------
def severity_block(records: list[dict[str, Any]]) -> Block | None:
    """Wrong species predictions by the deepest rank they still share with the truth."""
    rows = [r for r in records if r.get("rank") == "species" and r.get("mistakes") is not None]
    if not rows:
        return None
    keys = series_keys(rows)
    names = series_names(keys)
    by_key = {(r["model"], r.get("mode") or "", r.get("text_type") or ""): r for r in rows}
    series = []
    for k in keys:
        rec = by_key[k]
        total = int(rec.get("mistakes") or 0)
        values = {}
        for level in SEVERITY_LEVELS:
            n = int(rec.get(f"mistakes_deepest_{level}") or 0)
            values[level] = Interval(n / total if total else None, n=total, k=n)
        series.append(BarSeries(names[k], values))
    labels = {lv: "no rank" if lv == "none" else lv for lv in SEVERITY_LEVELS}
    cols = [Column("shared down to")] + [Column(names[k], "count_pct") for k in keys]
    table_rows: list[list[Any]] = []
    for level in SEVERITY_LEVELS:
        cells: list[Any] = [labels[level]]
        for k in keys:
            rec = by_key[k]
            total = int(rec.get("mistakes") or 0)
            n = int(rec.get(f"mistakes_deepest_{level}") or 0)
            cells.append((n, n / total if total else None))
        table_rows.append(cells)
    table_rows.append(
        ["mean shared ranks (0-6)"]
        + [num(by_key[k].get("mistake_shared_ranks_mean")) for k in keys]
    )
    table_rows.append(["wrong species predictions"] + [by_key[k].get("mistakes") for k in keys])
    return Block(
        "Mistake severity",
        text="Wrong species predictions by the deepest rank the predicted species still shares "
        "with the true one: a wrong species of the right genus is a near miss, 'no rank' a "
        "prediction from another kingdom.",
        figures=[
            BarChart(
                "Wrong species predictions: deepest shared rank",
                list(SEVERITY_LEVELS),
                series,
                labels,
                y_label="share of wrong predictions",
            )
        ],
        tables=[Table(cols, table_rows)],
    )


# -- the document --------------------------------------------------------------------------------
def _title(records: list[dict[str, Any]], summary: dict[str, Any], sources: list[str]) -> str:
    data = summary.get("data")
    if data:
        where = Path(str(data)).name or str(data)
        if summary.get("split") and summary.get("kind") == "shards":
            where += f" (split {summary['split']})"
        return f"Evaluation on {where}"
    models = unique(r["model"] for r in records)
    if models:
        return "Evaluation of " + ", ".join(models[:3]) + (" ..." if len(models) > 3 else "")
    return f"Evaluation ({', '.join(sources)})"


def _facts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    if not summary:
        return []
    facts = [("data", str(summary.get("data", "")))]
    if summary.get("split"):
        facts.append(("split", str(summary["split"])))
    if summary.get("n_samples") is not None:
        facts.append(("samples", str(summary["n_samples"])))
    labels = summary.get("labels") or {}
    if labels:
        facts.append(("labels", f"{labels.get('source')} ({labels.get('n_species')} species)"))
    if summary.get("ranks"):
        facts.append(("ranks", ", ".join(summary["ranks"])))
    if summary.get("modes"):
        facts.append(("modes", ", ".join(summary["modes"])))
    types = summary.get("text_types") or [summary.get("text_type")]
    facts.append(("name styles", ", ".join(str(t) for t in types if t)))
    if summary.get("templates"):
        facts.append(("templates", f"{summary['templates']} ({summary.get('n_templates')})"))
    for key in ("label_col", "candidates_col", "group_by"):
        if summary.get(key):
            facts.append((key.replace("_", " "), str(summary[key])))
    if summary.get("seconds") is not None:
        facts.append(
            ("time", f"{summary['seconds']} s on {summary.get('world_size', 1)} process(es)")
        )
    if summary.get("biotrove_version"):
        facts.append(("biotrove", str(summary["biotrove_version"])))
    return facts


def _notes(records: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    notes = []
    for m in summary.get("models") or []:
        if m.get("n_unreadable"):
            reasons = ", ".join(f"{k} {v}" for k, v in sorted((m.get("unreadable") or {}).items()))
            notes.append(
                f"{m['model']}: {plural(m['n_unreadable'], 'image')} unreadable, "
                f"skipped ({reasons})"
            )
        if m.get("lost_samples"):
            notes.append(
                f"{m['model']}: {plural(m['lost_samples'], 'sample')} lost to shards "
                "that could not be read or ended early"
            )
    seen = set()
    for r in records:
        for key, what in (
            ("n_blank", "without a {}"),
            ("n_not_in_bank", "with a {} the label bank lacks"),
        ):
            n = r.get(key) or 0
            if n and (r.get("rank"), key) not in seen:
                seen.add((r.get("rank"), key))
                level = r.get("rank")
                notes.append(
                    f"{plural(int(n), 'image')} {what.format(level)} left out of the "
                    f"{level} metrics"
                )
        if r.get("n_not_in_candidates") and "cand" not in seen and r.get("scope") == "micro":
            seen.add("cand")
            notes.append(
                f"{plural(int(r['n_not_in_candidates']), 'photo')} whose true name is "
                "none of its candidates left out"
            )
    return notes


def _models_block(models: list[dict[str, Any]]) -> Block:
    cols = [
        Column("model"),
        Column("name style"),
        Column("architecture"),
        Column("precision"),
        Column("images", "int"),
        Column("unreadable", "int"),
        Column("images/s", "float"),
        Column("load s", "float"),
    ]
    rows = []
    for m in models:
        t = m.get("timings") or {}
        rows.append(
            [
                m.get("model"),
                m.get("text_type"),
                m.get("arch"),
                m.get("precision"),
                m.get("n_images"),
                m.get("n_unreadable"),
                t.get("images_per_s"),
                t.get("load_s"),
            ]
        )
    return Block("Models", tables=[Table(cols, rows)], open=False)
