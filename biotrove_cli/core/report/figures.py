"""What a report shows, as plain data: sections made of blocks, each with its figures (bar and
line charts, heat maps) and tables. The builders of :mod:`biotrove_cli.core.report` fill them;
the renderer (``output/report``) only draws them, so everything a chart shows is computed, and
testable, here.

Values stay raw (fractions, counts, seconds); a table column's ``fmt`` says how to show them:
``text``, ``int``, ``pct`` (a fraction as a percentage), ``ci`` (a (value, low, high) triple of
fractions), ``float``, ``sci`` (a small number such as a learning rate), ``bytes``, ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Interval:
    """A value with its 95% interval (all fractions) and the counts behind it."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None  # trials (images)
    k: int | None = None  # successes


@dataclass
class BarSeries:
    name: str
    values: dict[str, Interval]  # category -> value


@dataclass
class BarChart:
    """Grouped bars: one group per category, one bar per series; chance as a mark per group."""

    title: str
    categories: list[str]
    series: list[BarSeries]
    labels: dict[str, str] = field(default_factory=dict)  # category -> shown label
    chance: dict[str, float] = field(default_factory=dict)
    y_label: str = ""
    fmt: str = "pct"  # the values: pct (fractions, shown 0-100%) or int (counts)
    horizontal: bool = False  # categories down the side (long names: per-class charts)


@dataclass
class LineSeries:
    name: str
    points: list[tuple[float, float]]  # (x, y), x increasing
    markers: bool = False  # few points (evaluations): draw each


@dataclass
class LineChart:
    title: str
    series: list[LineSeries]
    x_label: str = "step"
    y_label: str = ""
    fmt: str = "float"  # y values: float, pct, sci
    log_y: bool = False


@dataclass
class Heatmap:
    """A confusion matrix: counts by true row and predicted column, shaded by row share."""

    title: str
    rows: list[str]
    columns: list[str]
    counts: list[list[int]]
    row_totals: list[int]  # every image of the row's class (also those predicted elsewhere)
    x_label: str = "predicted"
    y_label: str = "true"


Figure = BarChart | LineChart | Heatmap


@dataclass
class Column:
    name: str
    fmt: str = "text"


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Block:
    """A part of a section: a title, a sentence, figures, tables, preformatted text, and
    sub-blocks (shown as collapsible panels; ``open`` ones unfolded)."""

    title: str
    text: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    code: str = ""
    children: list[Block] = field(default_factory=list)
    open: bool = True


@dataclass
class Section:
    """One source's part of the report (a gallery, an evaluation, a training run)."""

    kind: str  # classify | eval | run
    title: str
    sources: list[str]
    facts: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    gallery: Any = None  # a gallery.Gallery (classify sections)
    gallery_after: int = 0  # how many blocks come before the gallery

    def figures(self) -> list[Figure]:
        """Every figure of the section, depth first."""
        out: list[Figure] = []

        def walk(blocks: list[Block]) -> None:
            for b in blocks:
                out.extend(b.figures)
                walk(b.children)

        walk(self.blocks)
        return out
