"""``biotrove report``'s page: one self-contained HTML file from a :class:`ReportData`.

Styles, script, thumbnails and charts are all inside the file: it opens from a USB stick, with
no network and no server. The page's Content-Security-Policy forbids every fetch (only data:
images, the inline style and the one inline script, by its hash, are allowed). The template,
style sheet and script are package resources (``biotrove_cli/resources/report/``); the
gallery's photos travel as JSON that the script pages through, so 10,000 photos stay fast.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.report.figures import (
    BarChart,
    Block,
    Column,
    Heatmap,
    LineChart,
    Section,
    Table,
)
from biotrove_cli.output.report.svg import pattern_defs, swatch

_RANK_NAMES = {"none": "no rank reached", "label": "label"}


def _resource(name: str) -> str:
    return resources.files("biotrove_cli").joinpath("resources", "report", name).read_text("utf-8")


def render_report(report: Any) -> str:
    """The whole page as text."""
    script = _resource("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    ids = [f"s{i + 1}-{s.kind}" for i, s in enumerate(report.sections)]
    toc = "".join(
        f'<li><a href="#{i}">{escape(s.title)}</a></li>'
        for i, s in zip(ids, report.sections, strict=True)
    )
    body = "".join(_section(s, i) for s, i in zip(report.sections, ids, strict=True))
    notes = "; ".join(escape(n) for n in report.notes)
    return Template(_resource("page.html")).substitute(
        title=escape(report.title),
        css=_resource("report.css"),
        script=script,
        script_hash=digest,
        defs=pattern_defs(),
        meta=escape(
            f"made by biotrove {report.version} on {report.created} from "
            f"{len(report.sources)} source{'s' if len(report.sources) != 1 else ''}"
        ),
        sources="".join(f"<li><code>{escape(s)}</code></li>" for s in report.sources),
        notes=f'<p class="read-also">Also read: {notes}.</p>' if notes else "",
        toc=toc,
        body=body,
    )


def write_report(report: Any, path: str) -> int:
    """Write the page to ``path`` (``-``: stdout) atomically; returns its size in bytes."""
    import sys

    from biotrove_cli.core.io import atomic_write_text

    text = render_report(report)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)
    return len(text.encode("utf-8"))


def emit_report(report: Any, path: str) -> None:
    """Write the page and say on stderr what it holds (and what it could not show)."""
    from biotrove_cli.core.fmt import plural
    from biotrove_cli.output import console

    for note in report.notes:
        console.info(f"also reading {note}")
    for s in report.sections:
        for note in s.notes:
            if s.kind == "classify":  # the photos it could not show are the user's to fix
                console.warn(f"{s.title}: {note}")
    if path != "-" and Path(path).is_dir():
        from biotrove_cli.core.errors import UsageError

        raise UsageError(f"-o {path} is a folder", hint="name the page's file, e.g. -o report.html")
    size = write_report(report, path)
    parts = []
    for s in report.sections:
        if s.kind == "classify":
            g = s.gallery
            parts.append(f"{plural(len(g.photos), 'photo')} ({len(g.errors)} unreadable)")
        elif s.kind == "eval":
            parts.append(f"{s.title.lower()} ({plural(len(s.figures()), 'chart')})")
        else:
            parts.append(f"{s.title.lower()} ({plural(len(s.figures()), 'chart')})")
    where = "stdout" if path == "-" else path
    console.info(f"wrote {where} ({human_size(size)}): " + "; ".join(parts))


def classify_report(
    rows: list[dict[str, Any]], summary: dict[str, Any], results: str | None, path: str
) -> None:
    """``classify --report``: the report of a run's records (or of the ``results`` file that
    holds them all, after ``--resume``), with the thumbnails' progress on stderr."""
    from biotrove_cli.core.report.build import ReportConfig, build_report, classify_source
    from biotrove_cli.output import progress

    source = classify_source(rows, summary, results)
    with progress.progress("thumbnails", unit="photos") as cb:
        report = build_report(ReportConfig(sources=[]), cb, given=source)
    emit_report(report, path)


# -- sections ------------------------------------------------------------------------------------
def _section(s: Section, sid: str) -> str:
    parts = [f'<section class="section {s.kind}" id="{sid}" data-kind="{s.kind}">']
    parts.append(f"<h2>{escape(s.title)}</h2>")
    if s.facts:
        parts.append('<dl class="facts">')
        for k, v in s.facts:
            parts.append(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>")
        parts.append("</dl>")
    if s.notes:
        parts.append(
            '<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in s.notes) + "</ul>"
        )
    blocks = [_block(b, f"{sid}-b{i}", 3) for i, b in enumerate(s.blocks)]
    if s.gallery is not None:
        blocks.insert(s.gallery_after, _gallery(s.gallery, f"{sid}-g"))
    parts += blocks
    parts.append("</section>")
    return "".join(parts)


def _block(b: Block, bid: str, level: int) -> str:
    inner = []
    if b.text:
        inner.append(f'<p class="lead">{escape(b.text)}</p>')
    if b.figures:
        figs = "".join(_figure(fig, f"{bid}-f{k}") for k, fig in enumerate(b.figures))
        inner.append(f'<div class="figs">{figs}</div>')
    for t in b.tables:
        inner.append(_table(t))
    if b.code:
        inner.append(f'<pre class="code"><code>{escape(b.code)}</code></pre>')
    for k, child in enumerate(b.children):
        inner.append(_block(child, f"{bid}-c{k}", level + 1))
    body = "".join(inner)
    if level > 3 or not b.open:
        opened = " open" if b.open else ""
        return (
            f'<details class="block" id="{bid}"{opened}><summary>{escape(b.title)}</summary>'
            f"{body}</details>"
        )
    return f'<div class="block" id="{bid}"><h{level}>{escape(b.title)}</h{level}>{body}</div>'


def chart(fig: Any) -> str:
    """Any figure as inline SVG."""
    from biotrove_cli.output.report.bars import bar_chart
    from biotrove_cli.output.report.heat import heatmap
    from biotrove_cli.output.report.lines import line_chart

    if isinstance(fig, BarChart):
        return bar_chart(fig)
    if isinstance(fig, LineChart):
        return line_chart(fig)
    if isinstance(fig, Heatmap):
        return heatmap(fig)
    raise TypeError(f"no renderer for {type(fig).__name__}")


def _figure(fig: Any, fid: str) -> str:
    legend = ""
    names = [s.name for s in getattr(fig, "series", [])]
    line = type(fig).__name__ == "LineChart"
    if len(names) > 1 or line:
        items = "".join(
            f"<li>{swatch(i, line=line)}<span>{escape(n)}</span></li>" for i, n in enumerate(names)
        )
        if getattr(fig, "chance", None):
            items += (
                '<li><svg class="swatch" viewBox="0 0 32 16" width="32" height="16" '
                'aria-hidden="true"><line class="chance" x1="1" y1="8" x2="31" y2="8"/></svg>'
                "<span>chance</span></li>"
            )
        legend = f'<ul class="legend">{items}</ul>'
    elif getattr(fig, "chance", None):
        legend = (
            '<ul class="legend"><li><svg class="swatch" viewBox="0 0 32 16" width="32" '
            'height="16" aria-hidden="true"><line class="chance" x1="1" y1="8" x2="31" y2="8"/>'
            "</svg><span>chance</span></li></ul>"
        )
    return (
        f'<figure class="figure" id="{fid}"><figcaption>{escape(fig.title)}</figcaption>'
        f'<div class="scroll">{chart(fig)}</div>{legend}</figure>'
    )


# -- tables --------------------------------------------------------------------------------------
_NUMERIC = {"int", "pct", "ci", "float", "sci", "bytes", "count_pct"}


def cell_text(value: Any, fmt: str) -> str:
    """A table cell as text, by its column's format."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt in ("ci", "count_pct") and not isinstance(value, (tuple, list)):
        fmt = "int" if isinstance(value, int) else "float"  # a summary row of such a column
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    if fmt == "ci":
        v, lo, hi = value
        if v is None:
            return "–"
        if lo is None or hi is None:
            return f"{100 * v:.1f}%"
        return f"{100 * v:.1f}% ({100 * lo:.1f}–{100 * hi:.1f})"
    if fmt == "count_pct":
        n, share = value
        return f"{n} ({100 * share:.0f}%)" if share is not None else str(n)
    if fmt == "int":
        return f"{int(value):,}"
    if fmt == "bytes":
        return human_size(value)
    if fmt == "sci":
        return f"{value:.3g}"
    if fmt == "float" and isinstance(value, (int, float)):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def _table(t: Table) -> str:
    def th(c: Column) -> str:
        cls = ' class="num"' if c.fmt in _NUMERIC else ""
        return f'<th scope="col"{cls}>{escape(c.name)}</th>'

    head = "".join(th(c) for c in t.columns)
    rows = []
    for r in t.rows:
        cells = []
        for c, v in zip(t.columns, r, strict=False):
            cls = ' class="num"' if c.fmt in _NUMERIC else ""
            cells.append(f"<td{cls}>{escape(cell_text(v, c.fmt))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{escape(t.caption)}</caption>" if t.caption else ""
    return (
        f'<div class="scroll"><table class="data">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# -- the gallery ---------------------------------------------------------------------------------
def gallery_json(g: Any) -> str:
    """The gallery's photos and taxa as compact JSON for the page's script (safe inside a
    script element: ``<`` is escaped)."""
    data = {
        "k": g.k,
        "ranks": list(g.ranks),
        "taxa": [[t.name, t.rank, t.common, list(t.lineage)] for t in g.taxa],
        "photos": [
            [
                p.path,
                p.rank,
                None if p.score is None or p.score != p.score else round(p.score, 6),
                [[i, round(s, 6)] for i, s in p.preds],
                p.thumb,
                p.thumb_wh[0],
                p.thumb_wh[1],
                p.thumb_error,
            ]
            for p in g.photos
        ],
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def _gallery(g: Any, gid: str) -> str:
    ranks = "".join(
        f'<option value="{escape(r)}">{escape(_RANK_NAMES.get(r, r))} ({n})</option>'
        for r, n in g.ranks.items()
    )
    taxa = "".join(f'<option value="{escape(n)}"></option>' for n in g.taxon_names)
    sorts = (
        ("file", "File order"),
        ("asc", "Least confident first"),
        ("desc", "Most confident first"),
        ("taxon", "By taxon"),
    )
    buttons = "".join(
        f'<button type="button" data-sort="{k}" aria-pressed="{"true" if k == "file" else "false"}"'
        f">{label}</button>"
        for k, label in sorts
    )
    size = human_size(sum(len(p.thumb or "") for p in g.photos))
    return Template(_resource("gallery.html")).substitute(
        gid=gid,
        n=len(g.photos),
        ranks=ranks,
        taxa=taxa,
        buttons=buttons,
        thumbs=escape(f"{g.thumbs_made} thumbnails, {size}"),
        data=gallery_json(g),
    )
