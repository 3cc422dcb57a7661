"""Eval data given as metadata (BioTrove and VLHub CSV/Parquet) or as an image folder.

A table row gives an image (a ``path`` column, or a ``photo_id`` with ``--images DIR``), a
lineage, and optionally the photo's true name (``--label-col``), its candidate names
(``--candidates``, names joined by ``!``) and its group (``--group-by``). An image folder
(``ROOT/<class name>/*.jpg``, torchvision's ImageFolder) gives one row per image, named by its
folder.

Paths as published point into their authors' cluster (``/scratch/.../Confounding/C4_x/f.jpg``):
a path that does not exist is looked up under ``--images`` as the longest suffix of it that
does (:class:`PathResolver`), and the summary says how every path was resolved.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from biotrove_cli.core.errors import InputError, SchemaError, UsageError
from biotrove_cli.core.evaluation.labels import NameClasses, norm_name, split_candidates
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import Rank

BLANK = -2  # a row without a true name
MISSING = -1  # a true name none of the classes (or of the row's candidates) has
# how a row's image was found (the summary's keys, in the order they are tried)
HOW = ("under_images", "as_written", "beside_table", "by_photo_id", "by_suffix", "not_found")
MAX_EXAMPLES = 3


@dataclass
class TableRow:
    """One photo to score: its key, where its image is, its lineage and its labels."""

    key: str
    files: tuple[str, ...]  # the image file (where it would be, when it was not found)
    taxon: Taxon
    index: int = 0  # the row's place in the data (the scorer looks its labels up by it)
    label: str = ""  # the true name (label column, folder, or the candidates' truth)
    option_names: tuple[str, ...] = ()  # the candidate names, as written
    group_name: str = ""
    label_index: int = BLANK  # its class among the names (or among its candidates)
    options: tuple[int, ...] = ()  # the candidates' class indices
    group: int = 0


class PathResolver:
    """Finds each row's image and counts how: the summary of :meth:`summary`."""

    def __init__(self, images: Path | None, table_dir: Path):
        self.images = images
        self.table_dir = table_dir
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # prefix dropped by suffix matching -> rows
        self.missing: list[str] = []

    def _found(self, how: str, path: Path) -> str:
        self.counts[how] += 1
        return str(path)

    def resolve(self, path: str, photo_id: str = "") -> str | None:
        """The existing file a row names, or None (counted as not found)."""
        from biotrove_cli.core.data.images import IMAGE_SUFFIXES

        if path:
            p = Path(path)
            rel = path.lstrip("/\\")
            if self.images is not None and rel and (self.images / rel).is_file():
                return self._found("under_images", self.images / rel)
            if p.is_absolute() and p.is_file():
                return self._found("as_written", p)
            if not p.is_absolute():
                if (self.table_dir / p).is_file():
                    return self._found("beside_table", self.table_dir / p)
                if p.is_file():
                    return self._found("as_written", p)
            if self.images is not None:
                parts = [x for x in PurePath(rel).parts if x not in ("", "/")]
                for i in range(1, len(parts)):  # the longest suffix first
                    cand = self.images.joinpath(*parts[i:])
                    if cand.is_file():
                        self.dropped["/" + "/".join(parts[:i])] += 1
                        return self._found("by_suffix", cand)
        elif photo_id and self.images is not None:
            for suffix in (".jpg", *IMAGE_SUFFIXES[1:]):
                cand = self.images / f"{photo_id}{suffix}"
                if cand.is_file():
                    return self._found("by_photo_id", cand)
        self.counts["not_found"] += 1
        if len(self.missing) < MAX_EXAMPLES:
            self.missing.append(path or f"photo {photo_id}")
        return None

    def expected(self, path: str, photo_id: str = "") -> str:
        """Where a row's image would be, for a row whose image was not found: loading it then
        says why (``missing``, or ``unsupported`` when a .gif or .heic of that name is there)."""
        if path:
            rel = path.lstrip("/\\")
            if self.images is not None and rel:
                return str(self.images / rel)
            p = Path(path)
            return str(p if p.is_absolute() else self.table_dir / p)
        return str(self.images / f"{photo_id}.jpg") if self.images is not None else photo_id

    def summary(self) -> dict[str, Any]:
        """How the paths were resolved: counts per way, dropped prefixes, missing examples."""
        out: dict[str, Any] = {h: self.counts.get(h, 0) for h in HOW}
        out["images"] = str(self.images) if self.images is not None else None
        out["dropped_prefixes"] = dict(self.dropped.most_common(MAX_EXAMPLES))
        out["not_found_examples"] = list(self.missing)
        return out


@dataclass
class TableSource:
    """What an eval table holds besides its rows: the label level, the groups, the paths."""

    kind: str = "table"  # "table" | "folder"
    label_col: str | None = None
    candidates_col: str | None = None
    group_col: str | None = None
    names: NameClasses | None = None  # the label level's classes (or the candidates')
    label_kind: str | None = None  # "scientific" (the classes are species) | "free"
    groups: list[str] = field(default_factory=lambda: [""])
    has_lineage: bool = True
    paths: dict[str, Any] | None = None

    @property
    def candidates(self) -> bool:
        return self.candidates_col is not None

    def describe(self) -> dict[str, Any]:
        """The table's part of the result document."""
        out: dict[str, Any] = {"label_col": self.label_col, "label_kind": self.label_kind}
        if self.candidates:
            out["candidates_col"] = self.candidates_col
            out["group_by"] = self.group_col
            out["groups"] = [g for g in self.groups if g] if self.group_col else []
        if self.names is not None:
            out["n_label_classes"] = len(self.names)
        if self.paths is not None:
            out["paths"] = self.paths
        return out


def _column(meta: Any, name: str | None, flag: str) -> str | None:
    """The table's spelling of column ``name`` (case-insensitive), or a schema error."""
    if name is None:
        return None
    lower = {c.lower(): c for c in meta.columns}
    if name.lower() not in lower:
        raise SchemaError(
            f"{meta.path}: {flag} {name}: no such column",
            hint=f"columns found: {', '.join(meta.columns)}",
        )
    return lower[name.lower()]


def _read(path: Path, label_col: str | None, extra: tuple[str, ...]) -> Any:
    from biotrove_cli.core.taxonomy.readers import ALIASES, LINEAGE_FIELDS, read_metadata

    # a label column named like a rank (VLHub's "class" of species names, DeepWeeds' "Species"
    # of common names) is not that rank; a name column may stay what it is
    rank_names = {a for f in LINEAGE_FIELDS for a in ALIASES[f]}
    exclude = (label_col,) if label_col and label_col.lower() in rank_names else ()
    try:
        return read_metadata(
            path, extra_columns=extra, exclude_columns=exclude, require_species=label_col is None
        )
    except SchemaError as exc:
        if label_col is not None or "no species columns" not in exc.message:
            raise
        raise SchemaError(
            exc.message, hint=f"{exc.hint}; or name the class column with --label-col COL"
        ) from None


def read_table(
    path: Path,
    images: str | None,
    label_col: str | None = None,
    candidates_col: str | None = None,
    group_col: str | None = None,
    limit: int | None = None,
) -> tuple[list[TableRow], TableSource]:
    """Read an eval table's rows (its first ``limit``) and find their images."""
    from biotrove_cli.core.taxonomy.readers import LINEAGE_FIELDS

    img_dir = Path(images) if images else None
    if img_dir is not None and not img_dir.is_dir():
        raise InputError(f"{img_dir}: no such image folder", hint="check the --images path")
    meta = _read(path, label_col, tuple(c for c in (label_col, candidates_col, group_col) if c))
    source = TableSource(
        label_col=_column(meta, label_col, "--label-col"),
        candidates_col=_column(meta, candidates_col, "--candidates"),
        group_col=_column(meta, group_col, "--group-by"),
    )
    if "path" not in meta.fields and "photo_id" not in meta.fields:
        raise SchemaError(
            f"{path}: no image column: need a path column ('path', 'file', 'filepath', "
            "'image_path'...) or 'photo_id' with --images DIR",
            hint=f"columns found: {', '.join(meta.columns)}",
        )
    if img_dir is None and "path" not in meta.fields:
        raise UsageError(
            f"{path}: images are named by photo id; say where they are",
            hint="add --images DIR (the folder holding {photo_id}.jpg files)",
        )
    resolver = PathResolver(img_dir, path.parent)
    rows = []
    for i, rec in enumerate(meta.records if limit is None else meta.records[:limit]):
        found = resolver.resolve(rec.path, rec.photo_id)
        rows.append(
            TableRow(
                key=rec.path or rec.photo_id or f"row{rec.row}",
                files=(found or resolver.expected(rec.path, rec.photo_id),),
                taxon=rec.taxon,
                index=i,
                label=rec.extra.get(label_col, "") if label_col else "",
                option_names=split_candidates(rec.extra.get(candidates_col or "", "")),
                group_name=rec.extra.get(group_col, "") if group_col else "",
            )
        )
    source.has_lineage = any(f in meta.fields for f in LINEAGE_FIELDS[:5]) or (
        "genus" in meta.fields and "species" in meta.fields
    )
    source.paths = resolver.summary()
    return rows, source


def read_image_folder(root: Path) -> tuple[list[TableRow], TableSource]:
    """One row per image under ``ROOT/<class>/`` (any depth below the class folder), labelled
    by the folder's name (``Acer_rubrum`` reads as ``Acer rubrum``)."""
    from biotrove_cli.core.data.images import is_image_path

    rows: list[TableRow] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = folder.name if " " in folder.name else folder.name.replace("_", " ")
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)):
            rows.append(
                TableRow(
                    key=str(f.relative_to(root)),
                    files=(str(f),),
                    taxon=Taxon.from_parts(),
                    index=len(rows),
                    label=name,
                )
            )
    return rows, TableSource(kind="folder", label_col="folder", has_lineage=False)


def is_image_folder(path: Path) -> bool:
    """A folder of class subfolders holding images (and no shards)."""
    from biotrove_cli.core.data.images import is_image_path

    if not path.is_dir() or any(path.glob("*.tar")):
        return False
    for sub in path.iterdir():
        if sub.is_dir() and any(p.is_file() and is_image_path(p) for p in sub.iterdir()):
            return True
    return False


# -- labels ------------------------------------------------------------------------------------
def _with_name(taxon: Taxon, name: str) -> Taxon:
    """``taxon``'s lineage with ``name`` as its scientific name (genus and epithet from it when
    the lineage lacks them)."""
    return Taxon.from_parts(
        *taxon.names[:6], taxon.epithet, scientific_name=name, common_name=taxon.common_name
    )


def _scientific_column(rows: list[TableRow], source: TableSource) -> bool:
    """The label column holds the rows' scientific names: every label is one, and none
    contradicts the binomial of its row's lineage."""
    from biotrove_cli.core.evaluation.labels import binomial, looks_scientific
    from biotrove_cli.core.taxonomy.readers import ALIASES

    if (source.label_col or "").lower() in ALIASES["common_name"]:
        return False
    labelled = [r for r in rows if r.label]
    if not labelled or not all(looks_scientific(r.label) for r in labelled):
        return False
    return all(
        binomial(r.label) == norm_name(r.taxon.binomial)
        for r in labelled
        if r.taxon.genus and r.taxon.epithet
    )


def label_rows(rows: list[TableRow], source: TableSource, bank: LabelBank | None) -> None:
    """Give every row its class: the label column's (or folder's), or its candidates'.

    A label column of scientific names becomes the rows' scientific name (the classes are
    species, scored at every rank their lineage has); any other becomes a level of its own.
    """
    if source.candidates:
        _label_candidates(rows, source, bank)
        return
    if source.label_col is None:
        return
    if _scientific_column(rows, source):
        source.label_kind = "scientific"
        for r in rows:
            if r.label:
                r.taxon = _with_name(r.taxon, r.label)
        return
    source.label_kind = "free"
    source.names = NameClasses.from_names((r.label for r in rows), scientific=False)
    for r in rows:
        r.label_index = source.names.index(r.label) if r.label else BLANK


def _label_candidates(rows: list[TableRow], source: TableSource, bank: LabelBank | None) -> None:
    """Candidate classes: every name any row offers, encoded once; each row's truth is its
    label (else its scientific name) among its own candidates."""
    taxon_of: dict[str, Taxon] = {}
    for r in rows:
        if r.taxon.genus and r.taxon.epithet:
            taxon_of.setdefault(norm_name(r.taxon.sci), r.taxon)
    names = [n for r in rows for n in r.option_names]
    if bank is not None and not bank.is_custom:
        species = bank.classes(Rank.SPECIES)
        for n in dict.fromkeys(names):
            i = bank.match(Taxon.from_parts(scientific_name=n), Rank.SPECIES)
            if i >= 0:
                taxon_of[norm_name(n)] = species.taxa[i]
    source.names = NameClasses.from_names(names, taxon_of)
    source.label_kind = "scientific" if source.names.scientific else "free"
    groups: dict[str, int] = {}
    for r in rows:
        r.options = tuple(source.names.index(n) for n in r.option_names)
        r.label = r.label or (r.taxon.sci if source.label_col is None else "")
        if not r.label:
            r.label_index = BLANK
        else:
            r.label_index = source.names.index(r.label, among=r.options)
        r.group = groups.setdefault(r.group_name, len(groups))
    source.groups = list(groups) or [""]


def fill_lineage(rows: list[TableRow], bank: LabelBank) -> int:
    """Rows named only by a species (a label column without lineage, a folder) take the
    lineage of the ``--labels`` species their binomial matches; returns how many did."""
    species = bank.classes(Rank.SPECIES)
    n = 0
    for r in rows:
        if r.taxon.kingdom or not r.taxon.epithet:
            continue
        i = bank.match(r.taxon, Rank.SPECIES)
        if i >= 0:
            r.taxon = species.taxa[i]
            n += 1
    return n
