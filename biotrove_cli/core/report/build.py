"""``biotrove report``: the sources given -> the sections of one report (plain data; the page is
drawn by ``output/report``).

Each classify result makes a gallery section (with the classify ``--summary`` document given
beside it, if any), each run folder a training section, and each set of eval records an
evaluation section. An eval ``--summary`` document, ``--per-class`` CSV or ``--confusion`` CSV
joins the evaluation whose records name the same models (the nearest one given before it when
several do), or makes a section of its own; the per-class and confusion files a summary names
are picked up when they exist and were not given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.report.figures import Section
from biotrove_cli.core.report.sources import WHAT, Source, read_source
from biotrove_cli.core.runtime import ProgressFn

_AUX = ("eval_summary", "per_class", "confusion")


@dataclass
class ReportConfig:
    """Everything ``biotrove report`` needs; the CLI builds it from flags."""

    sources: list[str]
    title: str | None = None
    images: str | None = None  # the folder relative photo paths are under
    thumb_size: int = 160  # 0: no thumbnails
    max_classes: int = 25  # per-class rows shown per rank
    max_confusion: int = 20  # classes of a confusion heat map
    workers: int | None = None  # thumbnail threads


@dataclass
class ReportData:
    """The report: its title, when and by what it was made, and its sections in source order."""

    title: str
    sections: list[Section]
    sources: list[str]
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    version: str = __version__
    notes: list[str] = field(default_factory=list)


def classify_source(
    rows: list[dict[str, Any]], summary: dict[str, Any], results: str | None = None
) -> list[Source]:
    """The sources of ``classify --report``: the run's records (or, after ``--resume``, the
    ``results`` file holding them all) and its summary document."""
    model = (summary.get("model") or {}).get("spec") or "the model"
    name = Path(f"classify with {Path(str(model)).name or model}")
    source = read_source(results) if results else Source("classify", name, rows)
    if source.kind != "classify":
        raise InputError(f"{results}: not classify results")
    return [source, Source("classify_summary", Path("summary"), doc=summary)]


def check_config(cfg: ReportConfig, need_sources: bool = True) -> None:
    """Refuse impossible settings before any work."""
    if need_sources and not cfg.sources:
        raise UsageError("give at least one SOURCE", hint=WHAT)
    if cfg.thumb_size < 0 or cfg.thumb_size > 1024:
        raise UsageError(f"--thumb-size must be 0 to 1024 pixels, got {cfg.thumb_size}")
    if cfg.max_classes < 1 or cfg.max_confusion < 2:
        raise UsageError("--classes must be at least 1 and --confusion-classes at least 2")
    if cfg.images is not None and not Path(cfg.images).is_dir():
        raise InputError(f"--images {cfg.images}: no such folder")


def build_report(
    cfg: ReportConfig,
    progress: ProgressFn | None = None,
    *,
    given: list[Source] | None = None,
) -> ReportData:
    """Read every source and build the sections (see the module docstring).

    Args:
        progress: ``(done, total)`` over the thumbnails.
        given: sources already in memory (``classify --report``), before those of ``cfg``.
    """
    check_config(cfg, need_sources=not given)
    sources = list(given or []) + [read_source(s) for s in cfg.sources]
    notes: list[str] = []
    sources += _named_by_summaries(sources, notes)
    groups = _group(sources)
    photos = sum(
        len({r.get("path") for r in g[0].rows if not r.get("error")})
        for g in groups
        if g[0].kind == "classify"
    )
    done_before = [0]

    def gallery_progress(done: int, total: int) -> None:  # one bar over every gallery
        if progress is not None:
            progress(done_before[0] + done, photos)

    sections = []
    for group in groups:
        sections.append(_section(group, cfg, gallery_progress))
        if group[0].kind == "classify":
            done_before[0] += len(sections[-1].gallery.photos)
    title = cfg.title or _title(sections)
    return ReportData(title, sections, [str(s.path) for s in sources], notes=notes)


def _title(sections: list[Section]) -> str:
    kinds = {"classify": "photos", "eval": "evaluation", "run": "training"}
    parts = list(dict.fromkeys(kinds[s.kind] for s in sections))
    if len(sections) == 1:
        return sections[0].title
    return "biotrove report: " + ", ".join(parts)


def _section(group: list[Source], cfg: ReportConfig, progress: ProgressFn) -> Section:
    from biotrove_cli.core.report.evaluation import build_eval
    from biotrove_cli.core.report.gallery import build_gallery
    from biotrove_cli.core.report.training import build_run

    head = group[0]
    if head.kind == "run":
        return build_run(head.path)
    if head.kind == "classify":
        search = [Path(cfg.images)] if cfg.images else []
        search += [Path.cwd(), head.path.parent.resolve()]
        gallery = build_gallery(
            head.rows,
            head.name,
            search=list(dict.fromkeys(search)),
            thumb_size=cfg.thumb_size,
            progress=progress,
            workers=cfg.workers,
        )
        if len(group) > 1:
            gallery.summary = group[1].doc
        return _gallery_section(gallery, [str(s.path) for s in group])
    by_kind: dict[str, Any] = {s.kind: s for s in group}
    return build_eval(
        by_kind["eval"].rows if "eval" in by_kind else [],
        by_kind["eval_summary"].doc if "eval_summary" in by_kind else None,
        [r for s in group if s.kind == "per_class" for r in s.rows],
        [r for s in group if s.kind == "confusion" for r in s.rows],
        sources=[str(s.path) for s in group],
        max_classes=cfg.max_classes,
        max_confusion=cfg.max_confusion,
    )


def _gallery_section(gallery: Any, sources: list[str]) -> Section:
    from biotrove_cli.core.report.gallery import gallery_blocks, gallery_facts

    section = Section("classify", f"Photos: {gallery.source}", sources, gallery=gallery)
    section.facts = gallery_facts(gallery)
    section.notes = list(gallery.notes)
    section.blocks = gallery_blocks(gallery)
    section.gallery_after = sum(1 for b in section.blocks if b.title == "Overview")
    return section


# -- grouping ------------------------------------------------------------------------------------
def _models(source: Source) -> set[str]:
    if source.kind == "eval_summary":
        return {str(m.get("model")) for m in source.doc.get("models") or []}
    return {str(r.get("model")) for r in source.rows}


def _group(sources: list[Source]) -> list[list[Source]]:
    """Sources -> sections: [head, attached...] in the order the heads were given."""
    groups: list[list[Source]] = []
    position: dict[int, int] = {}  # id(group head) -> where the head was given
    later: list[tuple[int, Source]] = []
    for i, s in enumerate(sources):
        if s.kind in ("run", "classify", "eval"):
            groups.append([s])
            position[id(s)] = i
        else:
            later.append((i, s))
    # summaries of classify first, then the eval files in the order given, then the files
    # a summary names (they join their summary)
    later.sort(key=lambda t: (t[1].kind != "classify_summary", t[1].named_by is not None, t[0]))
    for i, s in later:
        fitting = [g for g in groups if _fits(g, s)]
        if s.named_by is not None:
            fitting = [g for g in groups if any(x is s.named_by for x in g)] or fitting
        if not fitting:
            if s.kind == "classify_summary":
                raise InputError(
                    f"{s.path}: a classify --summary file, but no classify results go with it",
                    hint="give the results file it describes too (the -o FILE of that run)",
                )
            groups.append([s])  # an evaluation known from its summary or CSVs alone
            position[id(s)] = i
            continue
        before = [g for g in fitting if position[id(g[0])] < i]
        target = max(before, key=lambda g: position[id(g[0])]) if before else fitting[0]
        target.append(s)
    groups.sort(key=lambda g: position[id(g[0])])
    return groups


def _fits(group: list[Source], s: Source) -> bool:
    """Whether ``s`` (a summary or CSV) describes the section ``group`` heads."""
    head = group[0]
    if s.kind == "classify_summary":
        return head.kind == "classify" and len(group) == 1
    if head.kind not in ("eval", *_AUX):
        return False
    if s.kind == "eval_summary" and any(x.kind == "eval_summary" for x in group):
        return False  # one run's document per section
    return _models(s) <= set().union(*(_models(x) for x in group))


def _named_by_summaries(sources: list[Source], notes: list[str]) -> list[Source]:
    """The per-class and confusion CSVs an eval summary names, when they exist and were not
    given (looked up as written, then beside the summary)."""
    given = {os.path.realpath(s.path) for s in sources}
    found = []
    for s in sources:
        if s.kind != "eval_summary":
            continue
        for what in ("per_class", "confusion"):
            name = (s.doc.get("files") or {}).get(what)
            if not name:
                continue
            for cand in (Path(name), s.path.parent / name, s.path.parent / Path(name).name):
                if cand.is_file() and os.path.realpath(cand) not in given:
                    try:
                        extra = read_source(cand)
                    except InputError:
                        break
                    if extra.kind == what:
                        extra.named_by = s
                        found.append(extra)
                        given.add(os.path.realpath(cand))
                        notes.append(f"{cand} (the {what.replace('_', '-')} file {s.name} names)")
                    break
                if cand.is_file():
                    break
    return found
