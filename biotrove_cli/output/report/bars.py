"""Bar charts of a report: grouped vertical bars with their 95% intervals, value labels and a
chance mark per group; horizontal bars for long category names (per-class recall)."""

from __future__ import annotations

from html import escape

from biotrove_cli.core.report.figures import BarChart
from biotrove_cli.output.report.svg import (
    axis_y,
    fmt_value,
    nice_ticks,
    rotated,
    shorten,
    svg_root,
    text,
)


def bar_chart(fig: BarChart) -> str:
    """Vertical grouped bars (or horizontal ones for ``fig.horizontal``)."""
    if fig.horizontal:
        return _hbar_chart(fig)
    cats, series = fig.categories, fig.series
    n_s = max(1, len(series))
    labels = [fig.labels.get(c, c) for c in cats]
    left, right, top, plot_h = 56, 12, 30, 240.0
    width = max(400.0, left + right + (min(40.0, 560 / (len(cats) * n_s)) * n_s + 18) * len(cats))
    group_w = (width - left - right) / max(1, len(cats))
    bar_w = min(40.0, (group_w - 18) / n_s)  # bars keep their width, centred in their group
    longest = max((len(s) for s in labels), default=1)
    slant = longest * 7.2 > group_w - 4
    height = top + plot_h + 30 + (min(150, 6.5 * longest) if slant else 0)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if fig.fmt == "pct" else nice_ticks(0, _bar_max(fig))
    top_v = ticks[-1] or 1.0

    def y(v: float) -> float:
        return top + plot_h * (1 - v / top_v)

    out = [axis_y(ticks, y, left, width - right, fig.fmt)]
    if fig.y_label:
        out.append(rotated(14, top + plot_h / 2, fig.y_label, "axis-label", "middle", -90))
    for j, cat in enumerate(cats):
        gx = left + j * group_w
        x_first = gx + (group_w - bar_w * n_s) / 2
        for i, s in enumerate(series):
            iv = s.values.get(cat)
            if iv is not None and iv.value is not None:
                out += _column(x_first + i * bar_w, bar_w, y, i, s.name, labels[j], iv, fig.fmt)
        chance = fig.chance.get(cat)
        if chance is not None:
            out.append(
                f'<line class="chance" x1="{gx + 4:.1f}" x2="{gx + group_w - 4:.1f}" '
                f'y1="{y(chance):.1f}" y2="{y(chance):.1f}"><title>chance at {escape(labels[j])}: '
                f"{fmt_value(chance, fig.fmt)}{'%' if fig.fmt == 'pct' else ''}</title></line>"
            )
        cx = gx + group_w / 2
        if slant:
            out.append(rotated(cx, top + plot_h + 14, shorten(labels[j], 24), "cat", "end", -35))
        else:
            out.append(text(cx, top + plot_h + 18, labels[j], "cat"))
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right:.1f}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>'
    )
    return svg_root(width, height, fig.title, "".join(out), "bars")


def _column(x: float, bw: float, y, i: int, name: str, cat: str, iv, fmt: str) -> list[str]:
    """One bar, its interval's whisker and its value (upright over a narrow bar)."""
    out = [_bar(x, y(iv.value), bw * 0.9, y(0) - y(iv.value), i, name, cat, iv, fmt)]
    top_y = y(iv.value)
    if iv.low is not None and iv.high is not None:
        out.append(_whisker_v(x + bw * 0.45, y(iv.low), y(iv.high)))
        top_y = y(iv.high)
    if fmt == "int" and not iv.value:
        return out  # an empty bin: its axis says 0
    label = fmt_value(iv.value, fmt)
    if bw < 30:
        out.append(rotated(x + bw * 0.45 + 4, top_y - 4, label, "value", "start", -90))
    else:
        out.append(text(x + bw * 0.45, top_y - 4, label, "value"))
    return out


def _bar_max(fig: BarChart) -> float:
    vals = [
        v
        for s in fig.series
        for iv in s.values.values()
        for v in (iv.value, iv.high)
        if v is not None
    ]
    return max([*vals, *fig.chance.values(), 1e-9])


def _bar(x, y, w, h, i, series, cat, iv, fmt) -> str:
    unit = "%" if fmt == "pct" else ""
    tip = f"{series} · {cat}: {fmt_value(iv.value, fmt)}{unit}"
    if iv.low is not None and iv.high is not None:
        tip += f" (95% CI {fmt_value(iv.low, fmt)}–{fmt_value(iv.high, fmt)}{unit})"
    if iv.k is not None and iv.n is not None:
        tip += f", {iv.k} of {iv.n}"
    return (
        f'<rect class="bar s{i}" x="{x:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" '
        f'height="{max(h, 0):.1f}" fill="url(#p{i % 8})"><title>{escape(tip)}</title></rect>'
    )


def _whisker_v(x: float, y_lo: float, y_hi: float) -> str:
    return (
        f'<path class="ci" d="M{x:.1f} {y_lo:.1f}V{y_hi:.1f}M{x - 4:.1f} {y_lo:.1f}h8'
        f'M{x - 4:.1f} {y_hi:.1f}h8"/>'
    )


def _hbar_chart(fig: BarChart) -> str:
    """Categories down the side (class names), one bar each, with its interval and value."""
    cats = fig.categories
    s = fig.series[0] if fig.series else None
    names = [shorten(fig.labels.get(c, c), 34) for c in cats]
    left = min(260, 16 + 7.2 * max((len(n) for n in names), default=4))
    right, top, row = 56, 26, 22
    width = 720.0
    plot_w = width - left - right
    height = top + row * len(cats) + 16

    def x(v: float) -> float:
        return left + plot_w * v

    out = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 6}" '
            f'y2="{height - 12:.1f}"/>'
        )
        out.append(text(x(t), top - 10, f"{100 * t:.0f}%", "tick"))
    for j, cat in enumerate(cats):
        cy = top + j * row
        out.append(text(left - 6, cy + row * 0.65, names[j], "cat", "end"))
        iv = s.values.get(cat) if s else None
        if iv is None or iv.value is None:
            continue
        out.append(_bar(left, cy + 3, x(iv.value) - left, row - 6, 0, s.name, cat, iv, "pct"))
        end = x(iv.value)
        if iv.low is not None and iv.high is not None:
            my = cy + row / 2
            out.append(
                f'<path class="ci" d="M{x(iv.low):.1f} {my:.1f}H{x(iv.high):.1f}'
                f'M{x(iv.low):.1f} {my - 4:.1f}v8M{x(iv.high):.1f} {my - 4:.1f}v8"/>'
            )
            end = x(iv.high)
        out.append(
            text(end + 5, cy + row * 0.68, fmt_value(iv.value, "pct") + "%", "value", "start")
        )
    return svg_root(width, height, fig.title, "".join(out), "hbars")
