"""The per-class parts of an evaluation section, from ``eval --per-class`` and ``--confusion``:
each class's top-1 recall worst first, with its Wilson interval, and the confusion at a rank as
a heat map of the classes most involved in mistakes, with the most frequent mistakes listed."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from biotrove_cli.core.evaluation.metrics import SEVERITY_KEYS, wilson_interval
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.report.figures import (
    BarChart,
    BarSeries,
    Block,
    Column,
    Heatmap,
    Interval,
    Table,
)
from biotrove_cli.core.report.names import level_label, num, series_names, unique


# -- per class -----------------------------------------------------------------------------------
def per_class_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], list[dict]]:
    """The per-class CSV's rows grouped by (model, mode, text type, rank), each group's classes
    with images sorted worst first: lowest top-1 recall, then most images, then name; each
    with the Wilson interval of its recall."""
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        support = int(r.get("support") or 0)
        if support <= 0:
            continue  # predicted but absent from the data: no recall to rank
        correct = int(r.get("correct_top1") or 0)
        low, high = wilson_interval(correct, support)
        key = (
            str(r.get("model") or ""),
            str(r.get("mode") or ""),
            str(r.get("text_type") or ""),
            str(r.get("rank") or ""),
        )
        groups[key].append(
            {
                **r,
                "recall": correct / support,
                "low": low,
                "high": high,
                "support": support,
                "correct_top1": correct,
            }
        )
    for g in groups.values():
        g.sort(key=lambda c: (c["recall"], -c["support"], str(c.get("class"))))
    return dict(groups)


def per_class_block(rows: list[dict[str, Any]], summary: dict[str, Any], limit: int) -> Block:
    """A panel per (model, mode, text type, rank): the worst classes' recall with its interval
    (a chart and a table); the deepest rank of the first model is unfolded."""
    groups = per_class_rows(rows)
    keys = list(groups)
    names = series_names(unique(k[:3] for k in keys))
    block = Block(
        "Per-class accuracy, worst first",
        text=f"Top-1 recall of each class with images (the {limit} worst per rank shown), with "
        "its 95% Wilson interval; precision is the share of the class's predictions that "
        "were right.",
    )
    deepest = max(keys, key=lambda k: (k[:3] == keys[0][:3], _rank_depth(k[3]))) if keys else None
    for key in keys:
        classes = groups[key]
        shown = classes[:limit]
        label = level_label(key[3], summary)
        head = f"{label}" if len(names) == 1 else f"{names[key[:3]]}: {label}"
        n_zero = sum(1 for c in classes if c["correct_top1"] == 0)
        mean = sum(c["recall"] for c in classes) / len(classes)
        child = Block(
            f"{head} ({plural(len(classes), 'class', 'classes')}, mean recall {100 * mean:.1f}%, "
            f"{n_zero} never right)",
            open=key == deepest,
        )
        series = [
            BarSeries(
                "top-1 recall",
                {
                    c["class"]: Interval(
                        c["recall"], c["low"], c["high"], c["support"], c["correct_top1"]
                    )
                    for c in shown
                },
            )
        ]
        child.figures.append(
            BarChart(
                f"Worst classes: {head}",
                [c["class"] for c in shown],
                series,
                y_label="top-1 recall",
                horizontal=True,
            )
        )
        cols = [
            Column("class"),
            Column("common name"),
            Column("images", "int"),
            Column("top-1 recall", "ci"),
            Column("top-5 recall", "pct"),
            Column("predicted", "int"),
            Column("precision", "pct"),
        ]
        table_rows = [
            [
                c["class"],
                c.get("common_name") or "",
                c["support"],
                (c["recall"], c["low"], c["high"]),
                num(c.get("recall_top5")),
                c.get("predicted"),
                num(c.get("precision")),
            ]
            for c in shown
        ]
        more = len(classes) - len(shown)
        caption = f"{more} better classes not shown (--classes N shows more)" if more > 0 else ""
        child.tables.append(Table(cols, table_rows, caption=caption))
        block.children.append(child)
    return block


def _rank_depth(rank: str) -> int:
    order = [*SEVERITY_KEYS[1:], "species", "label"]
    return order.index(rank) if rank in order else -1


# -- confusion -----------------------------------------------------------------------------------
def confusion_matrix(cells: list[dict[str, Any]], limit: int) -> tuple[Heatmap, list[list[Any]]]:
    """The heat map of one (model, mode, text type, rank)'s confusion: the ``limit`` classes
    most involved in mistakes (as truth or as prediction), in name order, with a column for
    predictions outside them; and every mistake, most frequent first
    (truth, predicted, count, share of the truth's images)."""
    totals: dict[str, int] = defaultdict(int)
    involved: dict[str, int] = defaultdict(int)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for c in cells:
        t, p, n = str(c["truth"]), str(c["predicted"]), int(c.get("count") or 0)
        count[(t, p)] += n
        totals[t] += n
        involved.setdefault(p, 0)
        if t != p:
            involved[t] += n
            involved[p] += n
    ranked = sorted(involved, key=lambda c: (-involved[c], -totals.get(c, 0), c))
    chosen = sorted(ranked[:limit])
    inside = set(chosen)
    rows = [c for c in chosen if totals.get(c)]
    columns = list(chosen)
    matrix = []
    for t in rows:
        line = [count.get((t, p), 0) for p in columns]
        outside = totals[t] - sum(line)
        matrix.append([*line, outside])
    has_other = any(m[-1] for m in matrix) or len(inside) < len(involved)
    if not has_other:
        matrix = [m[:-1] for m in matrix]
    heat = Heatmap(
        "Confusion",
        rows=rows,
        columns=[*columns, "other"] if has_other else columns,
        counts=matrix,
        row_totals=[totals[t] for t in rows],
    )
    mistakes = sorted(
        ((t, p, n) for (t, p), n in count.items() if t != p and n),
        key=lambda x: (-x[2], x[0], x[1]),
    )
    pairs = [[t, p, n, n / totals[t]] for t, p, n in mistakes]
    return heat, pairs


def confusion_block(rows: list[dict[str, Any]], limit: int) -> Block:
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        key = (
            str(r.get("model") or ""),
            str(r.get("mode") or ""),
            str(r.get("text_type") or ""),
            str(r.get("rank") or ""),
        )
        groups[key].append(r)
    names = series_names(unique(k[:3] for k in groups))
    block = Block(
        "Confusion",
        text=f"True classes down the side, predictions across, for the {limit} classes most "
        "involved in mistakes; each cell gives the count and is shaded by its share of the "
        "row's images; 'other' gathers predictions outside those classes.",
    )
    for i, (key, cells) in enumerate(groups.items()):
        heat, pairs = confusion_matrix(cells, limit)
        head = key[3] if len(names) == 1 else f"{names[key[:3]]}: {key[3]}"
        heat.title = f"Confusion at {head}"
        n_images = sum(heat.row_totals)
        child = Block(f"{head} ({plural(len(pairs), 'kind')} of mistake)", open=i == 0)
        child.figures.append(heat)
        cols = [
            Column("true"),
            Column("predicted"),
            Column("images", "int"),
            Column("share of the true class", "pct"),
        ]
        caption = f"the {min(15, len(pairs))} most frequent of {len(pairs)} mistakes"
        child.tables.append(Table(cols, pairs[:15], caption=caption))
        child.text = f"{plural(n_images, 'image')} of the classes shown."
        block.children.append(child)
    return block
