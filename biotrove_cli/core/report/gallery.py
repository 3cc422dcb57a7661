"""The gallery section of a report: the records of ``biotrove classify`` as one entry per photo
(its top-k predictions with lineage, common name and probability, or the reason it was not
classified), small EXIF-rotated JPEG thumbnails, and the counts the page's filters start from.

Photos are found where the records say; a relative path is looked up under ``--images``, then
from the current folder, then beside the results file. A photo that is no longer there keeps
its entry, without a thumbnail, and is counted.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.fmt import plural
from biotrove_cli.core.report.figures import BarChart, BarSeries, Block, Column, Interval, Table
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.rank import RANKS

#: Ranks a photo's answer can stop at, deepest last; ``label`` (custom labels) and ``none`` (no
#: rank reached ``--min-confidence``) come after them.
RANK_ORDER = (*(r.value for r in RANKS), "label", "none")
LINEAGE = tuple(r.value for r in RANKS)
HIST_BINS = 10
THUMB_QUALITY = 70


@dataclass(frozen=True)
class Taxon:
    """A predicted taxon: its name at its rank, its common name and its lineage down to it."""

    name: str
    rank: str
    common: str
    lineage: tuple[str, ...]


@dataclass
class Photo:
    """One classified photo: its predictions best first (taxon index, probability)."""

    path: str
    rank: str  # where the answer stops: a rank, "label" or "none"
    score: float | None  # the top prediction's probability (with "none": the kingdom's best)
    preds: list[tuple[int, float]] = field(default_factory=list)
    thumb: str | None = None  # base64 JPEG
    thumb_wh: tuple[int, int] = (0, 0)  # its width and height in pixels
    thumb_error: str | None = None  # why there is none: a reason code of core.data.images


@dataclass
class Gallery:
    """Everything the gallery shows, computed: photos, taxa, error rows and the counts."""

    source: str
    photos: list[Photo]
    taxa: list[Taxon]
    errors: list[dict[str, str]]  # path, reason, meaning
    ranks: dict[str, int]  # photos per rank reached, in RANK_ORDER
    histogram: list[int]  # photos per tenth of top-1 probability
    top_taxa: list[tuple[str, str, int]]  # (name, common name, photos), most predicted first
    k: int  # predictions per photo (the most any photo has)
    thumb_size: int
    thumbs_made: int = 0
    thumbs_missing: dict[str, int] = field(default_factory=dict)  # reason -> photos
    summary: dict[str, Any] = field(default_factory=dict)  # classify's --summary document
    notes: list[str] = field(default_factory=list)

    @property
    def taxon_names(self) -> list[str]:
        """Every name in the lineage of a top prediction, sorted (the taxon filter's list)."""
        names = {n for p in self.photos if p.preds for n in self.taxa[p.preds[0][0]].lineage}
        return sorted(n for n in names if n)


def build_gallery(
    rows: list[dict[str, Any]],
    source: str,
    *,
    search: Iterable[Path] = (),
    thumb_size: int = 160,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> Gallery:
    """Group classify records by photo, and make the thumbnails.

    Args:
        rows: the records, as ``biotrove classify`` writes them (one per prediction).
        source: what the records came from (a file name), for the page.
        search: folders a relative photo path is looked up under, in order.
        thumb_size: the longest side of a thumbnail in pixels; 0 makes none.
        progress: ``(done, total)`` over the thumbnails.
        workers: threads decoding photos (None: one per core, at most 16).
    """
    photos, taxa, errors = _group(rows)
    gallery = Gallery(
        source=source,
        photos=photos,
        taxa=taxa,
        errors=errors,
        ranks=_rank_counts(photos),
        histogram=_histogram(photos),
        top_taxa=_top_taxa(photos, taxa),
        k=max((len(p.preds) for p in photos), default=0),
        thumb_size=thumb_size,
    )
    if thumb_size > 0 and photos:
        _thumbnails(gallery, list(search), progress, workers)
    return gallery


# -- records -> photos -----------------------------------------------------------------------------
def _group(rows: list[dict[str, Any]]) -> tuple[list[Photo], list[Taxon], list[dict[str, str]]]:
    from biotrove_cli.core.evaluation.image_pass import REASONS

    by_path: dict[str, Photo] = {}
    errors: dict[str, dict[str, str]] = {}
    taxa: dict[Taxon, int] = {}
    for row in rows:
        path = str(row.get("path") or "")
        error = row.get("error")
        if error:  # an unreadable photo: one row with the reason
            errors.setdefault(
                path, {"path": path, "reason": str(error), "meaning": REASONS.get(error, "")}
            )
            continue
        rank = str(row.get("rank") or "")
        score = _float(row.get("score"))
        photo = by_path.get(path)
        if photo is None:
            photo = by_path[path] = Photo(path=path, rank=rank, score=score)
        if row.get("prediction") in (None, "") or not row.get("name"):
            continue  # "none": no rank reached --min-confidence
        taxon = _taxon(row, rank)
        index = taxa.setdefault(taxon, len(taxa))
        photo.preds.append((index, score if score is not None else float("nan")))
    photos = list(by_path.values())
    for p in photos:  # best first, whatever order the rows came in
        p.preds.sort(key=lambda t: -t[1])
        if p.preds:
            p.score = p.preds[0][1]
    return photos, list(taxa), list(errors.values())


def _taxon(row: dict[str, Any], rank: str) -> Taxon:
    name = str(row.get("name") or "")
    lineage: tuple[str, ...] = ()
    if rank in LINEAGE:
        depth = LINEAGE.index(rank) + 1
        lineage = tuple(str(row.get(r) or "") for r in LINEAGE[:depth])
    if not any(lineage):
        lineage = (name,)
    return Taxon(name, rank, str(row.get("common_name") or ""), lineage)


def _float(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _rank_counts(photos: list[Photo]) -> dict[str, int]:
    counts = Counter(p.rank for p in photos)
    known = {r: counts[r] for r in RANK_ORDER if counts[r]}
    return {**known, **{r: n for r, n in counts.items() if r not in known}}


def _histogram(photos: list[Photo]) -> list[int]:
    hist = [0] * HIST_BINS
    for p in photos:
        if p.score is not None and p.score == p.score:
            hist[min(HIST_BINS - 1, max(0, int(p.score * HIST_BINS)))] += 1
    return hist


def _top_taxa(photos: list[Photo], taxa: list[Taxon], n: int = 10) -> list[tuple[str, str, int]]:
    counts = Counter(p.preds[0][0] for p in photos if p.preds)
    return [(taxa[i].name, taxa[i].common, c) for i, c in counts.most_common(n)]


# -- thumbnails --------------------------------------------------------------------------------
def find_photo(path: str, search: list[Path]) -> Path | None:
    """The file a record's path names: as written when absolute, else the first folder of
    ``search`` it is under; None when it is nowhere."""
    p = Path(path)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in search:
        candidate = base / p
        if candidate.is_file():
            return candidate
    return None


def thumbnail(path: Path, size: int, quality: int = THUMB_QUALITY) -> tuple[bytes, int, int]:
    """A JPEG of the photo at ``path``, EXIF-rotated, its longest side at most ``size``; and its
    width and height.

    Raises:
        ImageError: the photo cannot be decoded (its reason code says why).
    """
    from PIL import Image

    from biotrove_cli.core.data.images import decode, read_bytes

    # draft: libjpeg decodes at 1/2, 1/4 or 1/8 scale, still at least size x size
    img = decode(read_bytes(path), str(path), draft=(size, size)).image
    img.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue(), img.width, img.height


def _thumbnails(
    gallery: Gallery, search: list[Path], progress: ProgressFn | None, workers: int | None
) -> None:
    from biotrove_cli.core.data.images import ImageError

    size = gallery.thumb_size

    def one(photo: Photo) -> None:
        found = find_photo(photo.path, search)
        if found is None:
            photo.thumb_error = "missing"
            return
        try:
            jpeg, w, h = thumbnail(found, size)
            photo.thumb = base64.b64encode(jpeg).decode("ascii")
            photo.thumb_wh = (w, h)
        except ImageError as exc:
            photo.thumb_error = exc.reason

    total = len(gallery.photos)
    n_workers = workers or min(16, os.cpu_count() or 1)
    if progress is not None:
        progress(0, total)
    # threads suffice: Pillow releases the GIL while it decodes, resizes and encodes
    with ThreadPoolExecutor(max_workers=max(1, n_workers)) as pool:
        for done, _ in enumerate(pool.map(one, gallery.photos), 1):
            if progress is not None:
                progress(done, total)
    missing = Counter(p.thumb_error for p in gallery.photos if p.thumb_error)
    gallery.thumbs_made = sum(1 for p in gallery.photos if p.thumb)
    gallery.thumbs_missing = dict(missing)
    if missing.get("missing"):
        where = ", ".join(str(s) for s in search) or "the current folder"
        gallery.notes.append(
            f"{missing['missing']} of {total} photos not found (looked under {where}); "
            "pass --images DIR, the folder their paths are relative to"
        )
    broken = {r: n for r, n in missing.items() if r != "missing"}
    if broken:
        gallery.notes.append(
            "no thumbnail for "
            + ", ".join(f"{n} ({r})" for r, n in sorted(broken.items()))
            + " photos that no longer decode"
        )


# -- what the section says besides the gallery ---------------------------------------------------
def gallery_facts(g: Gallery) -> list[tuple[str, str]]:
    """The run's facts: photos, errors, labels and model (from classify's summary)."""
    facts = [("photos", f"{len(g.photos)} classified, {len(g.errors)} unreadable")]
    if g.k:
        facts.append(("predictions", f"top {g.k} per photo"))
    s = g.summary
    if s:
        model = s.get("model") or {}
        facts.append(
            ("model", f"{model.get('spec')} ({model.get('arch')}, {model.get('precision')})")
        )
        facts.append(("labels", f"{s.get('labels')} ({s.get('n_labels')} classes)"))
        if s.get("text_type"):
            facts.append(("class texts", f"{s['text_type']}, templates {s.get('templates')}"))
        if s.get("seconds") is not None:
            rate = f", {s['images_per_s']} images/s" if s.get("images_per_s") else ""
            facts.append(("time", f"{s['seconds']} s{rate}"))
    if g.thumb_size:
        facts.append(("thumbnails", f"{g.thumbs_made} at {g.thumb_size} px"))
    return facts


def gallery_blocks(g: Gallery) -> list[Block]:
    """Charts of the whole set (confidence, rank reached, most predicted taxa) and the table of
    the photos that could not be classified."""
    blocks = []
    scored = sum(g.histogram)
    if scored:
        cats = [f"{10 * i}-{10 * (i + 1)}%" for i in range(HIST_BINS)]
        hist = BarSeries(
            "photos", {c: Interval(float(n)) for c, n in zip(cats, g.histogram, strict=True)}
        )
        ranks = BarSeries("photos", {r: Interval(float(n)) for r, n in g.ranks.items()})
        labels = {"none": "no rank"}
        figures = [
            BarChart("Top prediction's probability", cats, [hist], y_label="photos", fmt="int"),
            BarChart("Rank reached", list(g.ranks), [ranks], labels, y_label="photos", fmt="int"),
        ]
        tables = []
        if g.top_taxa:
            tables.append(
                Table(
                    [Column("most predicted"), Column("common name"), Column("photos", "int")],
                    [list(t) for t in g.top_taxa],
                )
            )
        blocks.append(
            Block(
                "Overview",
                text=f"{plural(scored, 'photo')} by the probability of their top prediction and by "
                "the rank their answer reaches (with --min-confidence, the deepest rank whose "
                "probability reaches the threshold).",
                figures=figures,
                tables=tables,
            )
        )
    if g.errors:
        cols = [Column("photo"), Column("reason"), Column("meaning")]
        rows = [[e["path"], e["reason"], e["meaning"]] for e in g.errors]
        blocks.append(
            Block(
                f"Not classified ({plural(len(g.errors), 'photo')})",
                text="Files classify could not read, with the reason.",
                tables=[Table(cols, rows)],
            )
        )
    return blocks
