"""Heat maps of a report (confusion matrices): counts in cells shaded by their share of the row,
the right answers boxed."""

from __future__ import annotations

from html import escape

from biotrove_cli.core.report.figures import Heatmap
from biotrove_cli.output.report.svg import (
    shorten,
    svg_root,
    text,
)


def heatmap(fig: Heatmap) -> str:
    """Counts in cells shaded by their share of the row; the diagonal (right answers) boxed."""
    cell = 30
    rows = [shorten(r, 30) for r in fig.rows]
    cols = [shorten(c, 30) for c in fig.columns]
    left = min(240, 20 + 7 * max((len(r) for r in rows), default=4))
    longest = max((len(c) for c in cols), default=4)
    top = min(220, 34 + 6.4 * longest)  # the column names, slanted up
    width = left + cell * len(cols) + max(64, 4.4 * longest)
    height = top + cell * len(rows) + 30
    out = [
        text(left - 6, top - 6, f"{fig.y_label} ↓", "axis-label", "end"),
        text(left, 14, f"{fig.x_label} →", "axis-label", "start"),
    ]
    for j, c in enumerate(cols):
        cx = left + j * cell + cell / 2
        out.append(
            text(cx, top - 6, c, "cat", "start", f' transform="rotate(-55 {cx:.1f} {top - 6:.1f})"')
        )
    for i, r in enumerate(rows):
        cy = top + i * cell
        out.append(text(left - 6, cy + cell * 0.62, r, "cat", "end"))
        total = fig.row_totals[i] or 1
        for j, n in enumerate(fig.counts[i]):
            x = left + j * cell
            share = n / total
            diag = j < len(fig.rows) and fig.columns[j] == fig.rows[i]
            fill = _shade(share) if n else "#fff"
            tip = (
                f"true {fig.rows[i]}, predicted {fig.columns[j]}: {n} of {fig.row_totals[i]} "
                f"({100 * share:.0f}%)"
            )
            out.append(
                f'<g class="cell{" diag" if diag else ""}"><title>{escape(tip)}</title>'
                f'<rect x="{x}" y="{cy:.1f}" width="{cell}" height="{cell}" fill="{fill}"/>'
            )
            if n:
                cls = "count light" if share > 0.55 else "count"  # white on the dark cells
                out.append(text(x + cell / 2, cy + cell * 0.64, str(n), cls))
            out.append("</g>")
        out.append(
            text(
                left + cell * len(cols) + 6,
                cy + cell * 0.64,
                str(fig.row_totals[i]),
                "total",
                "start",
            )
        )
    out.append(text(left + cell * len(cols) + 6, top - 6, "images", "tick", "start"))
    for i, r in enumerate(fig.rows):  # boxes on the diagonal, over the cells
        if r in fig.columns:
            j = fig.columns.index(r)
            out.append(
                f'<rect class="diag-box" x="{left + j * cell + 1}" '
                f'y="{top + i * cell + 1:.1f}" width="{cell - 2}" height="{cell - 2}"/>'
            )
    return svg_root(width, height, fig.title, "".join(out), "heat")


def _shade(share: float) -> str:
    """White to dark blue by the share of the row (lightness carries it: prints in grey)."""
    t = max(0.0, min(1.0, share)) ** 0.7
    r = round(235 - t * (235 - 8))
    g = round(243 - t * (243 - 48))
    b = round(250 - t * (250 - 107))
    return f"#{r:02x}{g:02x}{b:02x}"
