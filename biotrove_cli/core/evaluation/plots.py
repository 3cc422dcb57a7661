"""``biotrove eval --plot``: top-1 accuracy as a PNG bar chart, each bar with its 95% interval and
its value, the chance level drawn across each group of bars, the legend outside the axes.

* one text type: ranks (and the label level) on the x axis, a bar per model (x mode);
* a text-type sweep: ranks on the x axis, a bar per text type, a panel per model (x mode);
* candidate sets: groups, then the macro and micro averages, on the x axis, a bar per model
  (x text type).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset
from biotrove_cli.core.fmt import plural

Series = dict[str, dict[str, dict[str, Any]]]  # series name -> x category -> record


def check_plot_available() -> None:
    """Fail before any work when ``--plot`` cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'biotrove[plot]' (or pip install matplotlib)",
        ) from exc


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _draw_bars(
    ax: Any, categories: list[str], series: Series, colors: list[Any], ticks: dict[str, str]
) -> None:
    """Grouped bars with 95% intervals and value labels; chance as a dashed line per group."""
    n = max(1, len(series))
    width = 0.8 / n
    # a bar's width in points (the axes take about 3/4 of the figure): narrow bars get their
    # value labels upright, so that neighbours' labels do not run into each other
    small = width * 0.75 * 72 * ax.figure.get_figwidth() / max(1, len(categories)) < 24
    for i, (name, by_cat) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for j, cat in enumerate(categories):
            rec = by_cat.get(cat)
            if rec is None or _nan(rec.get("top1")):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * rec["top1"])
            lo.append(100 * (rec["top1"] - rec["top1_ci_low"]))
            hi.append(100 * (rec["top1_ci_high"] - rec["top1"]))
        bars = ax.bar(
            xs, ys, width=width * 0.92, label=name, yerr=[lo, hi], capsize=2, color=colors[i]
        )
        for bar, y, h in zip(bars, ys, hi, strict=True):
            ax.annotate(
                f"{y:.1f}",
                (bar.get_x() + bar.get_width() / 2, y + h),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6 if small else 7,
                rotation=90 if small else 0,
            )
    labelled = False
    for j, cat in enumerate(categories):
        chances = [r["chance"] for s in series.values() if (r := s.get(cat)) is not None]
        chances = [c for c in chances if not _nan(c)]
        if not chances:
            continue
        ax.hlines(
            100 * chances[0],
            j - 0.45,
            j + 0.45,
            colors="black",
            linestyles="dashed",
            linewidth=1.2,
            label=None if labelled else "chance",
            zorder=3,
        )
        labelled = True
    ax.set_xticks(range(len(categories)), [ticks.get(c, c) for c in categories])
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)


def _figure(n_panels: int, n_categories: int, n_series: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(6.0, 0.45 * n_categories * max(2, n_series) + 2)
    fig, axes = plt.subplots(
        n_panels, 1, figsize=(min(width, 18), 3.6 * n_panels + 0.8), dpi=120, squeeze=False
    )
    return fig, [a for row in axes for a in row]


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _title(ds: Dataset, cfg: EvalConfig, what: str, records: list[dict[str, Any]]) -> str:
    name = Path(str(ds.source)).name
    where = f"{name} (split {ds.split})" if ds.kind == "shards" and ds.split else name
    if ds.candidates and ds.names is not None:
        micro = next((r for r in records if r.get("scope") == "micro"), {})
        groups = [g for g in (ds.table.groups if ds.table else []) if g]
        size = plural(int(micro.get("n_images") or 0), "photo")
        size += f" in {plural(len(groups), 'group')}" if groups else ""
        size += f", {plural(len(ds.names), 'candidate name')}"
    elif ds.names is not None and not cfg.ranks:
        size = plural(len(ds.names), "class", "classes")
    else:
        size = plural(len(ds.bank), "species", "species")
        if ds.names is not None:
            size += f", {plural(len(ds.names), 'label class', 'label classes')}"
    return f"{what}\n{where}: {size}, templates {Path(str(cfg.templates)).name}"


def write_plot(path: str, records: list[dict[str, Any]], ds: Dataset, cfg: EvalConfig) -> None:
    """Draw the chart that fits the records (see the module docstring) into a PNG."""
    from biotrove_cli.core.io import atomic_open

    sweep = len(cfg.text_types) > 1
    several_modes = len(cfg.modes) > 1
    panels: dict[str, Series] = {}
    if ds.candidates:
        categories = _unique([r["group"] or r["scope"] for r in records])
        for r in records:
            name = f"{r['model']} ({r['text_type']})" if sweep else r["model"]
            panels.setdefault("", {}).setdefault(name, {})[r["group"] or r["scope"]] = r
        what = "Candidate-set top-1: each photo against its own candidates"
        ylabel = "top-1 among own candidates (%)"
        if not sweep:
            what += f", text {cfg.text_types[0]}"
    else:
        categories = _unique([r["rank"] for r in records])
        for r in records:
            panel = f"{r['model']} ({r['mode']})" if several_modes else r["model"]
            if sweep:
                panels.setdefault(panel, {}).setdefault(r["text_type"], {})[r["rank"]] = r
            else:
                name = panel if several_modes else r["model"]
                panels.setdefault("", {}).setdefault(name, {})[r["rank"]] = r
        what = "Zero-shot top-1 by rank and text type" if sweep else "Zero-shot top-1 by rank"
        ylabel = "top-1 (%), 95% Wilson CI"
        if not sweep:
            what += f", text {cfg.text_types[0]}"
    n_series = max(len(s) for s in panels.values())
    ticks = {"label": f"label\n({ds.table.label_col})"} if ds.table is not None else {}
    fig, axes = _figure(len(panels), len(categories), n_series)
    colors = _colors(n_series)
    for ax, (panel, series) in zip(axes, panels.items(), strict=True):
        _draw_bars(ax, categories, series, colors, ticks)
        if ds.candidates and len(categories) > 1:  # the averages apart from the groups
            n_avg = sum(1 for c in categories if c in ("macro", "micro"))
            ax.axvline(len(categories) - n_avg - 0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel(ylabel)
        if panel:
            ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(_title(ds, cfg, what, records), fontsize=11)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
