"""Line charts of a report (training curves): a dash pattern and a marker shape per series, and
each line named where it ends (the names moved apart so that none overlaps)."""

from __future__ import annotations

from html import escape

from biotrove_cli.core.report.figures import LineChart
from biotrove_cli.output.report.svg import (
    COLORS,
    DASHES,
    axis_y,
    fmt_value,
    marker,
    nice_ticks,
    shorten,
    svg_root,
    text,
)


def line_chart(fig: LineChart) -> str:
    series = [s for s in fig.series if s.points]
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points]
    labelled = len(series) > 1
    left, top, bottom = 64, 16, 40
    right = 16 + (min(150, 7.2 * max(len(s.name) for s in series) + 14) if labelled else 0)
    width, plot_h = 580.0, 220.0  # two side by side on a desktop
    height = top + plot_h + bottom
    plot_w = width - left - right
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    if fig.fmt == "pct":
        yt = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    else:
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        lo = 0.0 if fig.fmt == "sci" or lo >= 0 and lo < 0.25 * hi else lo
        yt = nice_ticks(lo, hi)
    y0, y1 = yt[0], yt[-1] if yt[-1] > yt[0] else yt[0] + 1

    def px(v: float) -> float:
        return left + plot_w * (v - x0) / (x1 - x0)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - y0) / (y1 - y0))

    out = [axis_y(yt, py, left, width - right, fig.fmt)]
    for t in nice_ticks(x0, x1, 6):
        if x0 <= t <= x1 and t == int(t):  # steps are whole numbers
            out.append(text(px(t), top + plot_h + 18, f"{t:,.0f}", "tick"))
    out.append(text(left + plot_w / 2, height - 4, fig.x_label, "axis-label"))
    out.append(
        text(
            14,
            top + plot_h / 2,
            fig.y_label,
            "axis-label",
            extra=f' transform="rotate(-90 14 {top + plot_h / 2:.1f})"',
        )
    )
    ends = []
    for i, s in enumerate(series):
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in s.points)
        dash = DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline class="line s{i}" points="{pts}" fill="none" stroke="{COLORS[i % 8]}" '
            f'stroke-width="2"{dash_attr}><title>{escape(s.name)}</title></polyline>'
        )
        if s.markers or len(s.points) <= 30:
            for a, b in s.points:
                out.append(
                    f'<g class="pt"><title>{escape(s.name)} at step {a:,.0f}: '
                    f"{fmt_value(b, fig.fmt)}{'%' if fig.fmt == 'pct' else ''}</title>"
                    f"{marker(i, px(a), py(b))}</g>"
                )
        ends.append([py(s.points[-1][1]), s.name, i])
    if labelled:
        for y, name, i in _spread(ends, 14, top, top + plot_h):
            out.append(
                text(
                    width - right + 8,
                    y + 4,
                    shorten(name, 22),
                    f"end s{i}",
                    "start",
                    f' style="fill:{COLORS[i % 8]}"',  # over the style sheet's text colour
                )
            )
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right:.1f}" '
        f'y1="{top + plot_h:.1f}" y2="{top + plot_h:.1f}"/>'
    )
    return svg_root(width, height, fig.title, "".join(out), "lines")


def _spread(ends: list[list], gap: float, lo: float, hi: float) -> list[list]:
    """End labels moved apart so that none overlaps (at least ``gap`` between them)."""
    ends = sorted(ends, key=lambda e: e[0])
    for k in range(1, len(ends)):
        ends[k][0] = max(ends[k][0], ends[k - 1][0] + gap)
    overflow = ends[-1][0] - hi if ends else 0
    if overflow > 0:
        for e in ends:
            e[0] -= overflow
        for k in range(len(ends) - 2, -1, -1):
            ends[k][0] = min(ends[k][0], ends[k + 1][0] - gap)
    return ends
