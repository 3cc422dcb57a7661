"""The charts of a report as inline SVG: the pieces every chart shares (palette, fill patterns,
markers, axes, ticks, numbers, text); ``bars.py``, ``lines.py`` and ``heat.py`` draw the figures
of :mod:`biotrove_cli.core.report.figures`.

Readable without colour: series differ by fill pattern (bars) or by dash and marker shape
(lines) as well as by colour (the Okabe-Ito palette, safe for colour-blind readers), every bar
and cell carries its number, lines are named where they end, and every mark has a tooltip.
Sizes are in SVG units; the page scales a chart to its width and lets wide ones scroll.
"""

from __future__ import annotations

import math
from html import escape

#: Okabe-Ito colours, darkest-contrast first (the yellow is left out: too pale on white).
COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#666666", "#000000")
DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 4", "12 3", "1 2", "6 2 2 2 2 2")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "triangle-down", "plus", "star")
FONT = 13


def pattern_defs() -> str:
    """One fill pattern per series colour: solid, stripes, dots, hatches... (used as
    ``url(#pN)`` by every chart of the page)."""
    marks = [
        "",
        '<path d="M0 8L8 0" stroke="#fff" stroke-width="2"/>',
        '<circle cx="4" cy="4" r="1.6" fill="#fff"/>',
        '<path d="M0 8L8 0M0 0L8 8" stroke="#fff" stroke-width="1.4"/>',
        '<path d="M0 4H8" stroke="#fff" stroke-width="2"/>',
        '<path d="M0 0L8 8" stroke="#fff" stroke-width="2"/>',
        '<path d="M4 0V8" stroke="#fff" stroke-width="2"/>',
        '<rect width="4" height="4" fill="#fff" opacity=".45"/>',
    ]
    out = []
    for i, (color, mark) in enumerate(zip(COLORS, marks, strict=True)):
        out.append(
            f'<pattern id="p{i}" patternUnits="userSpaceOnUse" width="8" height="8">'
            f'<rect width="8" height="8" fill="{color}"/>{mark}</pattern>'
        )
    return (
        '<svg class="defs" width="0" height="0" aria-hidden="true" focusable="false">'
        f"<defs>{''.join(out)}</defs></svg>"
    )


def swatch(i: int, line: bool = False) -> str:
    """The legend's sample of series ``i``: its patterned box, or its line and marker."""
    if not line:
        return (
            f'<svg class="swatch" viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">'
            f'<rect x="1" y="1" width="14" height="14" fill="url(#p{i % 8})" stroke="#222"/></svg>'
        )
    dash = DASHES[i % len(DASHES)]
    return (
        '<svg class="swatch" viewBox="0 0 32 16" width="32" height="16" aria-hidden="true">'
        f'<line x1="1" y1="8" x2="31" y2="8" stroke="{COLORS[i % 8]}" stroke-width="2.5"'
        f"{f' stroke-dasharray={chr(34)}{dash}{chr(34)}' if dash else ''}/>"
        f"{marker(i, 16, 8)}</svg>"
    )


# -- numbers ---------------------------------------------------------------------------------------
def fmt_value(v: float | None, fmt: str) -> str:
    """A value as a chart label: pct -> 35.4, int -> 12, sci -> 2e-3, float -> 3 digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if fmt == "pct":
        return f"{100 * v:.1f}"
    if fmt == "int":
        return f"{v:.0f}"
    if fmt == "sci":
        return f"{v:.2g}" if v and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.3g}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - 1e-12 and len(ticks) < 3 * n:  # the last tick at or above hi
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def text(x: float, y: float, s: str, cls: str = "", anchor: str = "middle", extra: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}{extra}>{escape(s)}</text>'


def rotated(x: float, y: float, s: str, cls: str, anchor: str, angle: float) -> str:
    """Text turned by ``angle`` degrees about its anchor point."""
    return text(x, y, s, cls, anchor, f' transform="rotate({angle:g} {x:.1f} {y:.1f})"')


def shorten(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def svg_root(width: float, height: float, title: str, body: str, kind: str) -> str:
    # scaled down no further than this on a narrow screen (the figure scrolls instead), so
    # that its text stays readable on a phone
    least = min(width, max(340.0, (0.6 if width <= 600 else 0.72) * width))
    return (
        f'<svg class="chart {kind}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" style="min-width:{least:.0f}px" role="img" '
        f'aria-label="{escape(title)}" font-size="{FONT}">{body}</svg>'
    )


def axis_y(ticks, y, x0: float, x1: float, fmt: str) -> str:
    out = []
    for t in ticks:
        label = f"{100 * t:.0f}%" if fmt == "pct" else fmt_value(t, fmt)
        out.append(f'<line class="grid" x1="{x0}" x2="{x1:.1f}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>')
        out.append(text(x0 - 6, y(t) + 4, label, "tick", "end"))
    return "".join(out)


def marker(i: int, x: float, y: float, r: float = 3.6) -> str:
    shape = MARKERS[i % len(MARKERS)]
    c = COLORS[i % 8]
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{c}"/>'
    if shape == "square":
        return (
            f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" fill="{c}"/>'
        )
    if shape in ("triangle", "triangle-down"):
        d = 1 if shape == "triangle" else -1
        return (
            f'<path d="M{x:.1f} {y - d * r * 1.2:.1f}L{x + r * 1.1:.1f} {y + d * r * 0.8:.1f}'
            f'H{x - r * 1.1:.1f}Z" fill="{c}"/>'
        )
    if shape == "diamond":
        return (
            f'<path d="M{x:.1f} {y - r * 1.3:.1f}L{x + r:.1f} {y:.1f}L{x:.1f} '
            f'{y + r * 1.3:.1f}L{x - r:.1f} {y:.1f}Z" fill="{c}"/>'
        )
    if shape == "cross":
        return (
            f'<path d="M{x - r:.1f} {y - r:.1f}L{x + r:.1f} {y + r:.1f}M{x - r:.1f} '
            f'{y + r:.1f}L{x + r:.1f} {y - r:.1f}" stroke="{c}" stroke-width="2"/>'
        )
    if shape == "plus":
        return (
            f'<path d="M{x - r:.1f} {y:.1f}H{x + r:.1f}M{x:.1f} {y - r:.1f}V{y + r:.1f}" '
            f'stroke="{c}" stroke-width="2"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="#fff" stroke="{c}" stroke-width="2"/>'
