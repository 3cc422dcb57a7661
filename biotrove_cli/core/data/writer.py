"""The sharding engine behind ``biotrove shard``: metadata + images -> WebDataset tar shards.

The job runs in four steps:

1. **Plan** (:func:`make_plan`): read the metadata, drop rows without a species and exact
   duplicate photos, keep the ``--categories``, set rare species aside into ``unseen``
   (``--min-per-species``), cap frequent ones (``--max-per-species``), split the rest into
   ``train``/``val`` by sample, shuffle, and cut every split into units of
   ``--samples-per-shard``. The plan is a pure function of the metadata rows, the arguments and
   the seed (rows are sorted by photo identity first, so file order does not matter either):
   every rerun, and every ``--part K/N`` on N machines, computes the same plan without talking
   to the others. Its fingerprint lands in ``plan.json``; an output folder holding another plan
   is refused before any work.
2. **Download** (optional, :mod:`download`): fetch the photos of this part's units that are not
   on disk.
3. **Write** (:func:`write_unit`): each unit becomes ``{split}/shard-{index:06d}.tar`` (plus
   ``_1``, ``_2``... parts when ``--max-shard-bytes`` is reached), each followed by its
   ``.stats.json``. Both are written atomically; a unit is complete only when the stats of its
   final part exist. Units are spread over ``--workers`` processes; unit ``u`` (counted over all
   splits) belongs to part ``u % N + 1``.
4. **Finalize** (:func:`finalize`): once every unit of the plan is complete, write ``sizes.json``
   per split, ``taxonomy.parquet`` and ``manifest.json``.

A rerun keeps complete units and deletes then redoes incomplete ones, so the final dataset holds
every selected sample exactly once, whatever interrupted the earlier run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import socket
import tarfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.shards import MANIFEST, PLAN, SIZES, SPLITS, TAXONOMY, shard_name
from biotrove_cli.core.errors import (
    BiotroveError,
    InputError,
    OutputExistsError,
    UsageError,
)
from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION, TEXT_TYPES, check_text_type
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS

log = logging.getLogger("biotrove.shard")

FORMAT = "biotrove-shards/1"
RESIZE_MODES = ("keep_ratio_largest", "center_crop", "keep", "none")
LOCAL_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FILE_MODE = 0o644  # shards are shared datasets (the temp files of atomic writes are 0600)
MAX_FAILED_LISTED = 50  # failed samples named per stats file


def _may_precede_plan(name: str) -> bool:
    """What an output folder may hold before its plan.json: download logs and the temp file of
    a plan write that was killed. Anything else may be someone's data, which is never touched.
    (A --part run that started a moment earlier writes plan.json before any split folder.)"""
    return name.startswith("downloads") or (name.startswith(".") and name.endswith(".tmp"))


ProgressFn = Callable[[int, int], None]
PhaseFn = Callable[[str, int], None]


# -- configuration ----------------------------------------------------------------------------
@dataclass
class ShardConfig:
    """Everything ``biotrove shard`` needs. Fields that shape the dataset enter its fingerprint."""

    metadata: list[Path] = field(default_factory=list)
    images: Path = Path("images")
    out: Path = Path("shards")
    categories: list[str] = field(default_factory=list)
    min_per_species: int = 0
    max_per_species: int = 0
    seed: int = 0
    val_fraction: float = 0.0
    image_size: int = 224
    resize_mode: str = "keep_ratio_largest"
    jpeg_quality: int = 95
    caption: str = DEFAULT_CAPTION
    captions: list[str] = field(default_factory=lambda: list(TEXT_TYPES))
    samples_per_shard: int = 1000
    max_shard_bytes: int = 0
    workers: int = 0
    part: tuple[int, int] = (1, 1)
    strict: bool = False
    download: bool = False
    download_workers: int = 8
    download_timeout: float = 30.0
    download_retries: int = 3

    def validate(self) -> list[str]:
        problems: list[str] = []
        if not self.metadata:
            problems.append("no metadata file given")
        if self.min_per_species < 0:
            problems.append("--min-per-species must be >= 0")
        if self.max_per_species < 0:
            problems.append("--max-per-species must be >= 0 (0 = no cap)")
        if self.max_per_species and self.max_per_species < self.min_per_species:
            problems.append(
                f"--max-per-species {self.max_per_species} is below --min-per-species "
                f"{self.min_per_species}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_size < 8:
            problems.append(f"--image-size must be >= 8, got {self.image_size}")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(
                f"--resize-mode {self.resize_mode!r}: use one of {', '.join(RESIZE_MODES)}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        if self.samples_per_shard < 1:
            problems.append("--samples-per-shard must be >= 1")
        if self.max_shard_bytes < 0:
            problems.append("--max-shard-bytes must be >= 0 (0 = no limit)")
        k, n = self.part
        if not (n >= 1 and 1 <= k <= n):
            problems.append(f"--part {k}/{n}: K must be in 1..N")
        for name in (self.caption, *self.captions):
            try:
                check_text_type(name)
            except UsageError:
                problems.append(f"unknown caption type {name!r} (use {', '.join(TEXT_TYPES)})")
        if self.download_workers < 1:
            problems.append("--download-workers must be >= 1")
        if self.download_timeout <= 0:
            problems.append("--download-timeout must be > 0")
        if self.download_retries < 0:
            problems.append("--download-retries must be >= 0")
        return problems

    def dataset_args(self) -> dict[str, Any]:
        """The arguments that decide what the dataset holds (they enter the fingerprint)."""
        return {
            "categories": sorted({c.strip().lower() for c in self.categories if c.strip()}),
            "min_per_species": self.min_per_species,
            "max_per_species": self.max_per_species,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "image_size": self.image_size,
            "resize_mode": self.resize_mode,
            "jpeg_quality": self.jpeg_quality,
            "caption": check_text_type(self.caption),
            "captions": [check_text_type(c) for c in self.captions],
            "samples_per_shard": self.samples_per_shard,
            "max_shard_bytes": self.max_shard_bytes,
        }


def parse_part(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8); a usage error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise UsageError(
            f"--part {text!r}: expected K/N with 1 <= K <= N (e.g. 3/8)",
            hint="in a SLURM array: --part $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT",
        )
    return int(m.group(1)), int(m.group(2))


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """``"500MB"``, ``"1.5G"``, ``"1GiB"``, ``"123456"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise UsageError(
            f"not a size: {text!r}", hint="use bytes or a unit, e.g. 500MB, 1G, 2GiB, 0 (no limit)"
        )
    base = 1024 ** "bkmgt".index(m.group(2) or "b") if m.group(3) else _SIZE_UNITS[m.group(2)]
    return int(float(m.group(1)) * base)


def parse_captions(text: str) -> list[str]:
    """``all`` or a comma list of BioTrove text types -> canonical names (usage error if bad)."""
    value = str(text).strip()
    if value.lower() in ("all", "*"):
        return list(TEXT_TYPES)
    if value.lower() in ("none", ""):
        return []
    out: list[str] = []
    for part in value.split(","):
        if part.strip():
            name = check_text_type(part)
            if name not in out:
                out.append(name)
    return out


# -- keys -------------------------------------------------------------------------------------
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY = 80  # + the longest suffix (.taxonTag_com.txt) fits a 100-byte tar name


def sanitize_key(text: str) -> str:
    """A key webdataset groups correctly: letters, digits, ``_`` and ``-`` only.

    Dots (webdataset splits the extension at the first dot), slashes and ``..`` become ``_``.
    Over-long keys keep their start and get a short hash, so they stay distinct.
    """
    key = _KEY_BAD.sub("_", str(text)).strip("_")
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:12]
        key = f"{key[: MAX_KEY - 13]}_{digest}"
    return key


def _key_base(photo_id: str, path: str, url: str) -> str:
    if photo_id:
        return sanitize_key(photo_id)
    if path:
        p = Path(path)
        return sanitize_key(str(p.with_suffix("")) if p.suffix else str(p))
    return "u" + hashlib.sha1(url.encode()).hexdigest()[:16]


# -- the plan ---------------------------------------------------------------------------------
@dataclass
class Sample:
    """One selected photo: where to find it and what it shows."""

    key: str
    ident: str  # identity used for de-duplication and ordering ("id:123", "path:a/b.jpg"...)
    photo_id: str
    path: str
    url: str
    taxon: Taxon
    split: str = ""
    source: str = ""  # the local file found under --images ('' = not found)


@dataclass
class Unit:
    """A planned shard: ``split/shard-{index:06d}.tar`` (and its overflow parts)."""

    split: str
    index: int
    ordinal: int  # position over all splits; decides the part that writes it
    samples: list[Sample]

    @property
    def name(self) -> str:
        return shard_name(self.index)

    def part_of(self, n_parts: int) -> int:
        return self.ordinal % n_parts + 1


@dataclass
class Plan:
    fingerprint: str
    args: dict[str, Any]
    units: list[Unit]
    selection: dict[str, int]
    taxa: list[Taxon]
    metadata: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def split_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for u in self.units:
            s = out.setdefault(u.split, {"samples": 0, "shards": 0})
            s["samples"] += len(u.samples)
            s["shards"] += 1
        return out

    def document(self) -> dict[str, Any]:
        """What goes into ``plan.json`` (small: no per-sample lists)."""
        return {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "args": self.args,
            "metadata": self.metadata,
            "selection": self.selection,
            "splits": self.split_counts(),
            "units": [
                {"split": u.split, "index": u.index, "samples": len(u.samples)} for u in self.units
            ],
            "taxa": [
                {
                    "species_key": t.species_key,
                    "names": list(t.names),
                    "scientific_name": t.scientific_name,
                    "common_name": t.common_name,
                }
                for t in self.taxa
            ],
        }


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _matches(taxon: Taxon, wanted: set[str]) -> bool:
    return any(taxon.name_at(r).lower() in wanted for r in RANKS)


def make_plan(cfg: ShardConfig) -> Plan:
    """Read the metadata and decide, deterministically, which sample goes to which shard.

    Raises:
        InputError/SchemaError: a metadata file is missing, unreadable or lacks columns.
        InputError: the selection is empty.
    """
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.readers import read_metadata

    args = cfg.dataset_args()
    metas = [read_metadata(p) for p in cfg.metadata]  # every schema problem before any work
    sel: Counter = Counter()
    candidates: list[tuple[str, int, int, Sample]] = []
    for fi, meta in enumerate(metas):
        for rec in meta.records:
            sel["rows"] += 1
            if not rec.taxon.species_key:
                sel["no_species"] += 1
                continue
            if rec.photo_id:
                ident = f"id:{rec.photo_id}"
            elif rec.path:
                ident = f"path:{rec.path}"
            elif rec.url:
                ident = f"url:{rec.url}"
            else:
                sel["no_image_reference"] += 1
                continue
            s = Sample(
                key="",
                ident=ident,
                photo_id=rec.photo_id,
                path=rec.path,
                url=rec.url,
                taxon=rec.taxon,
            )
            candidates.append((ident, fi, rec.row, s))
    # order by identity (then file and row for duplicates): the plan ignores file order
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    unique: list[Sample] = []
    last = None
    for ident, _fi, _row, s in candidates:
        if ident == last:
            sel["duplicates"] += 1
            continue
        last = ident
        unique.append(s)

    wanted = set(args["categories"])
    warn: list[str] = []
    if wanted:
        kept = [s for s in unique if _matches(s.taxon, wanted)]
        found = {n for s in kept for r in RANKS if (n := s.taxon.name_at(r).lower()) in wanted}
        unknown = sorted(wanted - found)
        if unknown and kept:
            warn.append(f"--categories: no row lies within {', '.join(unknown)}")
        sel["outside_categories"] = len(unique) - len(kept)
        unique = kept
    if not unique:
        where = ", ".join(str(p) for p in cfg.metadata)
        if wanted:
            raise InputError(
                f"empty selection: no row of {where} lies within {', '.join(cfg.categories)}",
                hint="--categories matches names at any rank (e.g. Aves, Araneae, Quercus); "
                "check the spelling with `biotrove info METADATA`",
            )
        raise InputError(
            f"empty selection: {where} has no row with a species and an image reference",
            hint="rows need a species (genus + epithet or a scientific name) and a photo_id, "
            "path or photo_url",
        )

    by_species: dict[str, list[Sample]] = {}
    for s in unique:
        by_species.setdefault(s.taxon.species_key, []).append(s)
    seen: list[Sample] = []
    unseen: list[Sample] = []
    for skey in sorted(by_species):
        group = by_species[skey]
        if cfg.min_per_species and len(group) < cfg.min_per_species:
            unseen.extend(group)
            sel["unseen_species"] += 1
            continue
        if cfg.max_per_species and len(group) > cfg.max_per_species:
            rng = random.Random(f"{cfg.seed}:cap:{skey}")
            group = list(group)
            rng.shuffle(group)
            sel["capped"] += len(group) - cfg.max_per_species
            group = sorted(group[: cfg.max_per_species], key=lambda s: s.ident)
        seen.extend(group)
    seen.sort(key=lambda s: s.ident)
    unseen.sort(key=lambda s: s.ident)
    random.Random(f"{cfg.seed}:split").shuffle(seen)
    random.Random(f"{cfg.seed}:unseen").shuffle(unseen)
    n_val = round(len(seen) * cfg.val_fraction)
    splits = {"train": seen[n_val:], "val": seen[:n_val], "unseen": unseen}

    # keys: sanitised, unique within the dataset (a clash gets _2, _3... in identity order)
    taken: set[str] = set()
    everyone = sorted((s for group in splits.values() for s in group), key=lambda s: s.ident)
    for s in everyone:
        base = _key_base(s.photo_id, s.path, s.url) or "sample"
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        taken.add(key)
        s.key = key
        if s.photo_id and key != s.photo_id:
            sel["renamed_keys"] += 1

    units: list[Unit] = []
    h = hashlib.sha256()
    h.update(FORMAT.encode())
    h.update(json.dumps(args, sort_keys=True).encode())
    for split in SPLITS:
        group = splits[split]
        for i in range(0, len(group), cfg.samples_per_shard):
            unit = Unit(
                split, i // cfg.samples_per_shard, len(units), group[i : i + cfg.samples_per_shard]
            )
            units.append(unit)
            h.update(f"\n#{split}/{unit.index}".encode())
            for s in unit.samples:
                t = s.taxon
                h.update(
                    "\x1f".join(
                        (s.key, s.ident, *t.names, t.scientific_name, t.common_name)
                    ).encode()
                    + b"\x1e"
                )
        for s in group:
            s.split = split
    sel["selected"] = sum(len(g) for g in splits.values())
    bank = LabelBank.from_taxa([s.taxon for g in splits.values() for s in g])
    metadata = [{"path": str(m.path), "schema": m.schema, "rows": len(m)} for m in metas]
    selection = {
        k: int(sel.get(k, 0))
        for k in (
            "rows",
            "no_species",
            "no_image_reference",
            "duplicates",
            "outside_categories",
            "unseen_species",
            "capped",
            "renamed_keys",
            "selected",
        )
    }
    return Plan(
        fingerprint=h.hexdigest(),
        args=args,
        units=units,
        selection=selection,
        taxa=bank.taxa,
        metadata=metadata,
        warnings=warn,
    )


# -- finding images ---------------------------------------------------------------------------
def index_images(folder: Path) -> dict[str, str]:
    """Lower-case file stem -> path, for every image under ``folder`` (first in sorted order)."""
    index: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if dot and f".{ext.lower()}" in LOCAL_SUFFIXES:
                index.setdefault(stem.lower(), os.path.join(root, name))
    return index


def resolve_sources(samples: list[Sample], images: Path) -> int:
    """Set ``sample.source`` for each sample whose image is under ``images``; returns found.

    A ``path`` is tried under ``images`` (a leading ``/`` is taken as the data root, as in the
    Life-Stages metadata), then as given; then the file is looked up by photo id, then by the
    path's file stem, in an index of the folder built once.
    """
    index: dict[str, str] | None = None
    found = 0
    for s in samples:
        s.source = ""
        if s.path:
            p = Path(s.path)
            for cand in (images / s.path.lstrip("/\\"), p):
                if cand.is_file():
                    s.source = str(cand)
                    break
        if not s.source:
            stems = [x.lower() for x in (s.photo_id, Path(s.path).stem if s.path else "") if x]
            if stems:
                if index is None:
                    index = index_images(images) if images.is_dir() else {}
                s.source = next((index[x] for x in stems if x in index), "")
        found += bool(s.source)
    return found


# -- images -----------------------------------------------------------------------------------
class _ImageFail(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*")


def _probe(data: bytes, source: str):
    """Open the image lazily (header only); map every failure to a reason code."""
    from PIL import Image, UnidentifiedImageError

    from biotrove_cli.core.data.images import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(_IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
            # it says it is an image but its headers are broken
            raise _ImageFail("corrupt", f"{source}: unreadable image headers") from exc
        raise _ImageFail("not_image", source) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageFail("too_large", f"{source}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError) as exc:
        text = str(exc).lower()
        reason = "truncated" if "truncat" in text or "premature" in text else "corrupt"
        raise _ImageFail(reason, f"{source}: {exc}") from exc
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise _ImageFail("too_large", f"{source} is {w}x{h} pixels")
    if w < 1 or h < 1:
        raise _ImageFail("corrupt", f"{source} is {w}x{h} pixels")
    return img


def _orientation(img) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to lose the photo
        return 1


def _jpeg_ends(data: bytes) -> bool:
    return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def process_image(
    data: bytes, source: str, mode: str, size: int, quality: int
) -> tuple[bytes, tuple[int, int], tuple[int, int], str]:
    """One photo -> (JPEG bytes, original (w, h), stored (w, h), conversion note or '').

    ``none`` passes an RGB/greyscale JPEG through byte for byte after reading its header and
    checking its end marker; anything else (PNG, CMYK, 16-bit, EXIF-rotated) is re-encoded at
    its own size. The other modes decode (JPEGs at a reduced DCT scale when the target is much
    smaller: ``draft``) and re-encode.

    Raises:
        _ImageFail: with a reason code of :data:`images.REASONS`.
    """
    from PIL import Image

    from biotrove_cli.core.data.images import ImageError, decode

    img0 = _probe(data, source)
    w, h = img0.size
    fmt = img0.format or ""
    note = "" if img0.mode in ("RGB", "L") else img0.mode
    if mode == "none":
        if fmt == "JPEG" and not note and _orientation(img0) == 1:
            if not _jpeg_ends(data):
                try:  # no end marker: truncated, or trailing bytes after a complete image
                    decode(data, source)
                except ImageError as exc:
                    raise _ImageFail(exc.reason, exc.detail) from exc
            return data, (w, h), (w, h), ""
        note = note or (fmt if fmt != "JPEG" else "exif_rotated")
    draft = None
    if fmt == "JPEG":
        side = {"keep_ratio_largest": max(w, h), "center_crop": min(w, h)}.get(mode)
        if side and side > size:
            r = size / side
            draft = (max(1, math.ceil(w * r)), max(1, math.ceil(h * r)))
    try:
        img = decode(data, source, draft=draft).image
    except ImageError as exc:
        raise _ImageFail(exc.reason, exc.detail) from exc
    iw, ih = img.size
    # the full-resolution size in the decoded orientation (EXIF may have turned it)
    ow, oh = (w, h) if (iw >= ih) == (w >= h) or w == h else (h, w)
    try:
        if mode == "keep_ratio_largest" and max(ow, oh) > size:
            r = size / max(ow, oh)
            target = (max(1, round(ow * r)), max(1, round(oh * r)))
            if target != img.size:
                img = img.resize(target, Image.BICUBIC)
        elif mode == "center_crop":
            r = size / min(ow, oh)
            tw, th = max(size, round(ow * r)), max(size, round(oh * r))
            if (tw, th) != img.size:
                img = img.resize((tw, th), Image.BICUBIC)
            left, top = (tw - size) // 2, (th - size) // 2
            img = img.crop((left, top, left + size, top + size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    except (OSError, ValueError) as exc:
        raise _ImageFail("corrupt", f"{source}: {exc}") from exc
    return buf.getvalue(), (w, h), img.size, note


# -- writing one unit -------------------------------------------------------------------------
@dataclass
class WriteSettings:
    """What every worker needs besides its unit (sent once per process)."""

    out: str
    fingerprint: str
    resize_mode: str
    image_size: int
    jpeg_quality: int
    caption: str
    captions: tuple[str, ...]
    max_shard_bytes: int
    strict: bool
    part_label: str


class StrictStop(Exception):
    """``--strict``: a bad sample ends the job (carried back from a worker as data)."""


class TarOut:
    """A minimal streaming tar writer: regular files only, fixed metadata (mode 0644, uid 0,
    mtime 0), so identical inputs give byte-identical shards.

    Much faster than :mod:`tarfile` (which copies a TarInfo and builds a PAX header per member,
    and dominates a pass-through job); names longer than 100 bytes fall back to tarfile's PAX
    headers, so any name stays valid.
    """

    _TEMPLATE = tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    _MODE_IDS = b"0000644\0" + _TEMPLATE[108:124]  # mode, uid, gid
    _MTIME = b"00000000000\0"
    _TAIL = _TEMPLATE[156:512]  # type, link name, magic, owner names, devices, prefix
    # the checksum counts its own field as spaces, plus everything but the name and size
    _BASE_SUM = sum(_MODE_IDS) + sum(_MTIME) + 8 * 32 + sum(_TAIL)

    def __init__(self, fh: Any):
        self.fh = fh
        self.offset = 0

    @staticmethod
    def header(name: str, size: int) -> bytes:
        raw = name.encode("utf-8")
        if len(raw) > 100 or size >= 8**11:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        size_field = b"%011o\0" % size
        chksum = TarOut._BASE_SUM + sum(raw) + sum(size_field)
        return b"".join(
            (
                raw.ljust(100, b"\0"),
                TarOut._MODE_IDS,
                size_field,
                TarOut._MTIME,
                b"%06o\0 " % chksum,
                TarOut._TAIL,
            )
        )

    def add(self, name: str, data: bytes) -> None:
        self.add_many([(name, data)])

    def add_many(self, members: list[tuple[str, bytes]]) -> None:
        """Append members with one write (a sample's files stay together)."""
        chunks = []
        for name, data in members:
            chunks.append(self.header(name, len(data)))
            chunks.append(data)
            pad = -len(data) % tarfile.BLOCKSIZE
            if pad:
                chunks.append(b"\0" * pad)
        block = b"".join(chunks)
        self.fh.write(block)
        self.offset += len(block)

    def close(self) -> None:
        end = self.offset + 2 * tarfile.BLOCKSIZE
        self.fh.write(b"\0" * (_closed_size(self.offset) - self.offset))
        self.offset = end


def _member_bytes(members: list[tuple[str, bytes]]) -> int:
    return sum(
        len(TarOut.header(name, len(data))) + -(-len(data) // 512) * 512 for name, data in members
    )


def _closed_size(offset: int) -> int:
    rec = tarfile.RECORDSIZE
    return -(-(offset + 2 * tarfile.BLOCKSIZE) // rec) * rec


def unit_files(split_dir: Path, index: int) -> list[Path]:
    """Every file (tars, stats, temp files) that belongs to unit ``index``."""
    prefixes = (f"shard-{index:06d}.", f"shard-{index:06d}_")
    out = []
    if split_dir.is_dir():
        for p in split_dir.iterdir():
            name = p.name.lstrip(".")
            if name.startswith(prefixes):
                out.append(p)
    return out


def _parent_alive(ppid: int) -> bool:
    return ppid == 0 or os.getppid() == ppid


def write_unit(
    unit: Unit,
    st: WriteSettings,
    tick: Callable[[int], None] | None = None,
    parent_pid: int = 0,
) -> dict[str, Any]:
    """Write one unit's tar(s) and stats; returns its combined stats.

    Leftovers of an earlier attempt are removed first. With ``--strict`` the first bad sample
    raises :class:`StrictStop` before anything of the unit is published.
    """
    from biotrove_cli.core.data.images import ImageError, read_bytes
    from biotrove_cli.core.data.shards import stats_name
    from biotrove_cli.core.io import atomic_open
    from biotrove_cli.core.taxonomy.captions import build_caption

    split_dir = Path(st.out) / unit.split
    split_dir.mkdir(parents=True, exist_ok=True)
    for p in unit_files(split_dir, unit.index):
        with contextlib.suppress(OSError):
            p.unlink()
    started = time.monotonic()
    host = socket.gethostname()
    # what only depends on the taxon is made once per taxon: captions and the lineage fields
    per_taxon: dict[Taxon, tuple[list[tuple[str, bytes]], dict[str, Any]]] = {}

    def taxon_parts(t: Taxon) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        got = per_taxon.get(t)
        if got is None:
            texts = [("txt", build_caption(t, st.caption).encode())]
            texts += [(f"{c}.txt", build_caption(t, c).encode()) for c in st.captions]
            fields = {
                "species_key": t.species_key,
                "scientific_name": t.scientific_name,
                "common_name": t.common_name,
                "epithet": t.epithet,
                "lineage": t.lineage_dict(),
            }
            got = per_taxon[t] = (texts, fields)
        return got

    parts: list[dict[str, Any]] = []
    samples = unit.samples
    pos = 0
    part = 0
    while True:
        name = shard_name(unit.index, part)
        count = 0
        failures: Counter = Counter()
        converted: Counter = Counter()
        species: Counter = Counter()
        failed: list[dict[str, str]] = []
        more = False
        t0 = time.monotonic()
        with atomic_open(split_dir / name, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            tar = TarOut(fh)
            while pos < len(samples):
                if not _parent_alive(parent_pid):
                    raise SystemExit(1)  # orphaned by a killed parent: publish nothing
                s = samples[pos]
                try:
                    if not s.source:
                        raise ImageError("missing", s.path or s.photo_id or s.url)
                    jpg, orig, stored, note = process_image(
                        read_bytes(s.source), s.source, st.resize_mode, st.image_size,
                        st.jpeg_quality,
                    )  # fmt: skip
                except (ImageError, _ImageFail) as exc:
                    bad = {
                        "key": s.key,
                        "source": s.source or s.path or s.photo_id or s.url,
                        "reason": exc.reason,
                        "detail": exc.detail,
                    }
                    if st.strict:
                        raise StrictStop(
                            json.dumps({**bad, "shard": f"{unit.split}/{name}"})
                        ) from exc
                    failures[exc.reason] += 1
                    if len(failed) < MAX_FAILED_LISTED:
                        failed.append(bad)
                    pos += 1
                    if tick is not None:
                        tick(1)
                    continue
                texts, fields = taxon_parts(s.taxon)
                meta = {
                    "key": s.key,
                    "photo_id": s.photo_id,
                    **fields,
                    "split": unit.split,
                    "source": s.source,
                    "url": s.url,
                    "original_size": list(orig),
                    "size": list(stored),
                }
                members = [(f"{s.key}.jpg", jpg)]
                members += [(f"{s.key}.{suffix}", text) for suffix, text in texts]
                members.append((f"{s.key}.json", json.dumps(meta, ensure_ascii=False).encode()))
                if st.max_shard_bytes and count:
                    grown = tar.offset + _member_bytes(members)
                    if _closed_size(grown) > st.max_shard_bytes:
                        more = True  # this sample opens the next overflow tar
                        break
                tar.add_many(members)
                count += 1
                species[fields["species_key"]] += 1
                if note:
                    converted[note] += 1
                pos += 1
                if tick is not None:
                    tick(1)
            tar.close()
        final = not more
        stats = {
            "shard": name,
            "split": unit.split,
            "unit": unit.index,
            "part": part,
            "final": final,
            "count": count,
            "successes": count,
            "failed": sum(failures.values()),
            "failures": dict(sorted(failures.items())),
            "converted": dict(sorted(converted.items())),
            "failed_samples": failed,
            "species": dict(sorted(species.items())),
            "bytes": (split_dir / name).stat().st_size,
            "seconds": round(time.monotonic() - t0, 4),
            "plan": st.fingerprint,
            "writer": {"part": st.part_label, "host": host, "pid": os.getpid()},
        }
        if final:
            stats["planned"] = len(samples)
            stats["parts"] = part + 1
            stats["unit_seconds"] = round(time.monotonic() - started, 4)
        _write_json(split_dir / stats_name(name), stats)
        parts.append(stats)
        if final:
            break
        part += 1
    return combine_unit_stats(parts)


def combine_unit_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats of a unit's parts added up."""
    failures: Counter = Counter()
    converted: Counter = Counter()
    species: Counter = Counter()
    for p in parts:
        failures.update(p.get("failures") or {})
        converted.update(p.get("converted") or {})
        species.update(p.get("species") or {})
    first = parts[0]
    return {
        "split": first["split"],
        "unit": first["unit"],
        "shards": {p["shard"]: int(p["count"]) for p in parts},
        "count": sum(int(p["count"]) for p in parts),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "converted": dict(converted),
        "species": dict(species),
        "bytes": sum(int(p.get("bytes", 0)) for p in parts),
        "seconds": sum(float(p.get("seconds", 0)) for p in parts),
        "failed_samples": [f for p in parts for f in p.get("failed_samples", [])],
    }


def _write_json(path: Path, obj: Any) -> None:
    """Atomic JSON, readable by the group/others like the tars (datasets are shared)."""
    from biotrove_cli.core.io import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# -- worker processes -------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _worker_init(settings: WriteSettings, counter: Any, parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    _W["settings"] = settings
    _W["counter"] = counter
    _W["parent"] = parent


def _worker_tick(n: int) -> None:
    counter = _W["counter"]
    with counter.get_lock():
        counter.value += n


def _worker_run(unit: Unit) -> dict[str, Any]:
    try:
        return {"ok": write_unit(unit, _W["settings"], tick=_worker_tick, parent_pid=_W["parent"])}
    except StrictStop as exc:
        return {"strict": str(exc)}


# -- unit state on disk -----------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def complete_units(out: Path, units: list[dict[str, Any]], fingerprint: str) -> dict[int, dict]:
    """Ordinal -> combined stats, for every unit whose files are all complete on disk."""
    from biotrove_cli.core.data.shards import stats_name

    listing: dict[str, set[str]] = {}
    done: dict[int, dict] = {}
    for ordinal, u in enumerate(units):
        split, index = u["split"], int(u["index"])
        names = listing.get(split)
        if names is None:
            d = out / split
            names = listing[split] = {p.name for p in d.iterdir()} if d.is_dir() else set()
        parts: list[dict] = []
        part = 0
        while True:
            tar = shard_name(index, part)
            sname = stats_name(tar)
            if tar not in names or sname not in names:
                parts = []
                break
            stats = _read_json(out / split / sname)
            if not isinstance(stats, dict) or stats.get("plan") != fingerprint:
                parts = []
                break
            parts.append(stats)
            if stats.get("final"):
                break
            part += 1
        if parts:
            done[ordinal] = combine_unit_stats(parts)
    return done


# -- the output folder ------------------------------------------------------------------------
def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_output(out: Path, plan: Plan) -> bool:
    """Check that ``out`` is empty or holds this very plan; write ``plan.json``.

    Returns True when the folder already held this plan (a resume).

    Raises:
        OutputExistsError: ``out`` holds another dataset, or files that are not a dataset.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: is a file, not a folder", hint="pick a folder")
    plan_path = out / PLAN
    if plan_path.is_file():
        old = _read_json(plan_path)
        if not isinstance(old, dict) or "fingerprint" not in old:
            raise OutputExistsError(
                f"{plan_path}: unreadable plan", hint="delete the folder or use another --out"
            )
        if old["fingerprint"] != plan.fingerprint:
            diff = _differences(old.get("args") or {}, plan.args)
            what = (
                "different arguments (" + "; ".join(diff) + ")"
                if diff
                else "the same arguments but different metadata"
            )
            raise OutputExistsError(
                f"{out} already holds another dataset: it was planned with {what}",
                hint="use a new --out folder (or delete this one); to resume it, rerun the exact "
                "command that started it (its arguments are in plan.json)",
            )
        return True
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if not _may_precede_plan(p.name)]
        if PLAN in foreign:  # another --part wrote it a moment ago
            return prepare_output(out, plan)
        if foreign:
            raise OutputExistsError(
                f"--out {out}: the folder is not empty and holds no biotrove plan "
                f"({', '.join(sorted(foreign)[:5])}{'...' if len(foreign) > 5 else ''})",
                hint="use a new or empty folder for the dataset",
            )
    out.mkdir(parents=True, exist_ok=True)
    _write_json(plan_path, plan.document())
    return False


# -- finalize ---------------------------------------------------------------------------------
@dataclass
class SplitSummary:
    split: str
    shards: int = 0  # tar files written (overflow parts included)
    units: int = 0
    pending: int = 0
    species: int = 0
    planned: int = 0
    written: int = 0
    failed: int = 0
    bytes: int = 0
    failures: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    species_keys: set[str] = field(default_factory=set)

    def record(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "shards": self.shards,
            "pending": self.pending,
            "species": self.species,
            "planned": self.planned,
            "written": self.written,
            "failed": self.failed,
            "failures": _counts_text(self.failures),
            "converted": _counts_text(self.converted),
            "mb": round(self.bytes / 1e6, 2),
        }


def _counts_text(c: Counter | dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(c.items()) if v)


def summarize(plan_doc: dict[str, Any], done: dict[int, dict]) -> list[SplitSummary]:
    by_split: dict[str, SplitSummary] = {}
    for ordinal, u in enumerate(plan_doc["units"]):
        s = by_split.setdefault(u["split"], SplitSummary(u["split"]))
        s.units += 1
        s.planned += int(u["samples"])
        st = done.get(ordinal)
        if st is None:
            s.pending += 1
            continue
        s.shards += len(st["shards"])
        s.written += st["count"]
        s.failed += st["failed"]
        s.bytes += st["bytes"]
        s.failures.update(st["failures"])
        s.converted.update(st["converted"])
        s.species_keys.update(k for k, v in st["species"].items() if v)
    for s in by_split.values():
        s.species = len(s.species_keys)
    return [by_split[sp] for sp in SPLITS if sp in by_split]


class IncompleteError(BiotroveError):
    """Finalize was asked for while some planned shards are not written."""


def finalize(out: Path, run: dict | None = None) -> dict[str, Any]:
    """Write ``sizes.json`` per split, ``taxonomy.parquet`` and ``manifest.json``.

    Returns the manifest.

    Raises:
        InputError: ``out`` holds no plan.
        IncompleteError: some planned shards are missing (the message names them and the
            ``--part`` runs that owe them).
    """
    from biotrove_cli import __version__
    from biotrove_cli.core.io import cleanup_temp_files
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    doc = _read_json(out / PLAN)
    if not isinstance(doc, dict) or "units" not in doc:
        raise InputError(
            f"{out}: no plan.json here, so nothing to finalize",
            hint="pass the --out folder of a `biotrove shard` run",
        )
    fp = doc["fingerprint"]
    units = doc["units"]
    done = complete_units(out, units, fp)
    missing = [i for i in range(len(units)) if i not in done]
    if missing:
        n_parts = {
            st.get("writer", {}).get("part")
            for st in (
                _read_json(p) for split in SPLITS for p in (out / split).glob("*.stats.json")
            )
            if isinstance(st, dict)
        }
        n_parts.discard(None)
        owners = ""
        ns = {int(str(p).split("/")[1]) for p in n_parts if "/" in str(p)}
        if len(ns) == 1:
            n = ns.pop()
            owed = sorted({i % n + 1 for i in missing})
            owners = f"; they belong to --part {', '.join(f'{k}/{n}' for k in owed)}"
        names = [f"{units[i]['split']}/{shard_name(int(units[i]['index']))}" for i in missing]
        raise IncompleteError(
            f"{out}: {len(missing)} of {len(units)} planned shards are not written yet "
            f"({', '.join(names[:5])}{'...' if len(names) > 5 else ''}){owners}",
            hint="run the missing parts (the same command with their --part K/N), or the "
            "command without --part, then finalize again",
        )
    summaries = summarize(doc, done)
    counts: dict[str, dict[str, int]] = {}
    for ordinal, st in done.items():
        split = units[ordinal]["split"]
        for key, n in st["species"].items():
            c = counts.setdefault(key, {})
            c[split] = c.get(split, 0) + int(n)
    for split in SPLITS:
        d = out / split
        if not d.is_dir():
            continue
        cleanup_temp_files(d)
        sizes: dict[str, int] = {}
        for ordinal in range(len(units)):
            if units[ordinal]["split"] == split:
                sizes.update(done[ordinal]["shards"])
        _write_json(d / SIZES, sizes)
    taxa = [
        Taxon(
            names=tuple(t["names"]),  # type: ignore[arg-type]
            scientific_name=t["scientific_name"],
            common_name=t["common_name"],
        )
        for t in doc.get("taxa", [])
        if t["species_key"] in counts
    ]
    bank = LabelBank(taxa=taxa, counts=counts, source=str(out))
    bank.save(out / TAXONOMY)
    os.chmod(out / TAXONOMY, FILE_MODE)
    failures: Counter = Counter()
    converted: Counter = Counter()
    for s in summaries:
        failures.update(s.failures)
        converted.update(s.converted)
    shard_seconds = sum(float(st["seconds"]) for st in done.values())
    written = sum(s.written for s in summaries)
    manifest = {
        "format": FORMAT,
        "biotrove_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fp,
        "args": doc.get("args", {}),
        "metadata": doc.get("metadata", []),
        "selection": doc.get("selection", {}),
        "splits": {
            s.split: {
                "shards": s.shards,
                "samples": s.written,
                "planned": s.planned,
                "failed": s.failed,
                "failures": dict(sorted(s.failures.items())),
                "converted": dict(sorted(s.converted.items())),
                "species": s.species,
                "bytes": s.bytes,
            }
            for s in summaries
        },
        "counts": {
            "planned": sum(s.planned for s in summaries),
            "samples": written,
            "failed": sum(s.failed for s in summaries),
            "species": len(taxa),
        },
        "failures": dict(sorted(failures.items())),
        "converted": dict(sorted(converted.items())),
        "timings": {
            "shard_seconds": round(shard_seconds, 3),
            "images_per_second_per_writer": round(
                (written + sum(failures.values())) / shard_seconds, 1
            )
            if shard_seconds
            else None,
            **({"last_run": run} if run else {}),
        },
    }
    _write_json(out / MANIFEST, manifest)
    return manifest


# -- the job ----------------------------------------------------------------------------------
@dataclass
class ShardResult:
    out: Path
    fingerprint: str
    selection: dict[str, int]
    splits: list[SplitSummary]
    resumed: bool
    kept_units: int  # complete before this run
    written_units: int  # written by this run
    other_parts_units: int  # units of other --part runs (this run did not touch them)
    pending_units: int  # units still missing after this run (other parts)
    finalized: bool
    seconds: float
    images_per_second: float
    download: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    failed_samples: list[dict[str, str]] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        rows = [s.record() for s in self.splits]
        if len(rows) > 1:
            total = SplitSummary("total")
            for s in self.splits:
                for f in ("shards", "pending", "planned", "written", "failed", "bytes"):
                    setattr(total, f, getattr(total, f) + getattr(s, f))
                total.failures.update(s.failures)
                total.converted.update(s.converted)
                total.species_keys |= s.species_keys
            total.species = len(total.species_keys)
            rows.append(total.record())
        return rows


def _write_all(
    todo: list[Unit],
    settings: WriteSettings,
    workers: int,
    progress: ProgressFn | None,
) -> list[dict[str, Any]]:
    """Write ``todo`` in this process or in ``workers`` processes; returns unit stats."""
    total = sum(len(u.samples) for u in todo)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    results: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, total)
    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            try:
                results.append(write_unit(unit, settings, tick=tick))
            except StrictStop as exc:
                _raise_strict(str(exc))
        return results

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # no fork: safe beside threads (progress bar, downloads)
    counter = ctx.Value("q", 0)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(settings, counter, os.getpid()),
    )
    try:
        pending = {pool.submit(_worker_run, u) for u in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in finished:
                res = fut.result()
                if "strict" in res:
                    _raise_strict(res["strict"])
                results.append(res["ok"])
            if progress is not None:
                progress(int(counter.value), total)
    except BrokenProcessPool as exc:
        _stop(pool)
        raise BiotroveError(
            "a writer process died (killed, or out of memory); complete shards are kept",
            hint="run the same command again to resume; use fewer --workers if memory is short",
        ) from exc
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _stop(pool: Any) -> None:
    """End a process pool now: queued units are dropped, running writers terminated (their
    unpublished temp files are removed when the unit is redone)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(5)


def _raise_strict(payload: str) -> None:
    info = json.loads(payload)
    raise InputError(
        f"--strict: bad sample {info['key']} ({info['source']}): {info['reason']}"
        + (f" - {info['detail']}" if info.get("detail") else ""),
        hint=f"fix or remove that image, or drop --strict to count bad images and go on; "
        f"shards written so far are kept ({info['shard']} was not written)",
    )


def shard_dataset(
    cfg: ShardConfig,
    progress: ProgressFn | None = None,
    phase: PhaseFn | None = None,
) -> ShardResult:
    """Plan, (download,) write this part's units, and finalize when the whole plan is done.

    Args:
        progress: ``(done, total)`` callback for the current phase.
        phase: called with (phase name, total) when a phase (``download``, ``shard``) starts.

    Raises:
        ConfigError: bad arguments (all listed).
        InputError / SchemaError: metadata or images unusable, empty selection; with
            ``--strict``, the first bad sample.
        OutputExistsError: ``--out`` holds another dataset.
        BiotroveError (exit 130): interrupted; rerunning resumes.
    """
    from biotrove_cli.core.errors import ConfigError

    problems = cfg.validate()
    if problems:
        raise ConfigError(problems, hint="see `biotrove shard --help`")
    t_start = time.monotonic()
    started_iso = datetime.now(timezone.utc).isoformat(timespec="seconds")
    images = Path(cfg.images)
    if not cfg.download and not images.is_dir():
        raise InputError(
            f"--images {images}: no such folder",
            hint="point --images at the photo folder, or add --download to fetch photo_url",
        )
    plan = make_plan(cfg)
    for w in plan.warnings:
        log.warning(w)
    sel = plan.selection
    log.info(
        f"plan: {sel['rows']} rows -> {sel['selected']} samples in {_n(len(plan.units), 'shard')}"
        + "".join(
            f", {sel[k]} {k.replace('_', ' ')}"
            for k in ("duplicates", "no_species", "outside_categories", "capped")
            if sel.get(k)
        )
        + (
            f", {sel['unseen_species']} rare species set aside as unseen"
            if sel.get("unseen_species")
            else ""
        )
    )
    out = Path(cfg.out)
    resumed = prepare_output(out, plan)
    doc_units = [
        {"split": u.split, "index": u.index, "samples": len(u.samples)} for u in plan.units
    ]
    k, n = cfg.part
    mine = [u for u in plan.units if u.part_of(n) == k]
    done_before = complete_units(out, doc_units, plan.fingerprint)
    todo = [u for u in mine if u.ordinal not in done_before]
    kept = len([u for u in mine if u.ordinal in done_before])
    if n > 1:
        log.info(
            f"part {k}/{n}: {len(mine)} of the {len(plan.units)} shards, {kept} already complete "
            f"({len(done_before)} complete in all)"
        )
    elif resumed:
        log.info(f"resuming {out}: {len(done_before)} of {len(plan.units)} shards already complete")

    samples = [s for u in todo for s in u.samples]
    found = resolve_sources(samples, images)
    download_summary = None
    if cfg.download:
        try:
            download_summary, fetched = _download_missing(samples, cfg, out, progress, phase)
        except KeyboardInterrupt:
            raise _interrupted(out, done_before, plan) from None
        found += fetched
    if samples and not found:
        example = samples[0].path or samples[0].photo_id or samples[0].url
        raise InputError(
            f"none of the {len(samples)} images to write is under --images {images} "
            f"(e.g. {example!r})",
            hint="point --images at the photo folder: files are found by the path column, or "
            "as {photo_id}.jpg|jpeg|png|webp anywhere below it"
            + ("" if cfg.download else "; add --download to fetch photo_url"),
        )

    settings = WriteSettings(
        out=str(out),
        fingerprint=plan.fingerprint,
        resize_mode=cfg.resize_mode,
        image_size=cfg.image_size,
        jpeg_quality=cfg.jpeg_quality,
        caption=check_text_type(cfg.caption),
        captions=tuple(check_text_type(c) for c in cfg.captions),
        max_shard_bytes=cfg.max_shard_bytes,
        strict=cfg.strict,
        part_label=f"{k}/{n}",
    )
    workers = cfg.workers if cfg.workers > 0 else 1
    if phase is not None:
        phase("shard", len(samples))
    t_write = time.monotonic()
    try:
        _write_all(todo, settings, workers, progress)
    except KeyboardInterrupt:
        raise _interrupted(out, None, plan) from None
    write_seconds = time.monotonic() - t_write

    plan_doc = plan.document()
    done_now = complete_units(out, doc_units, plan.fingerprint)
    missing = [i for i in range(len(plan.units)) if i not in done_now]
    finalized = False
    run = {
        "started": started_iso,
        "seconds": round(time.monotonic() - t_start, 3),
        "write_seconds": round(write_seconds, 3),
        "workers": workers,
        "part": f"{k}/{n}",
        "units_written": len(todo),
        "samples_processed": len(samples),
        "images_per_second": round(len(samples) / write_seconds, 1) if write_seconds else None,
    }
    if not missing:
        finalize(out, run=run)
        finalized = True
    summaries = summarize(plan_doc, done_now)
    failed_samples = [f for st in done_now.values() for f in st.get("failed_samples", [])][
        :MAX_FAILED_LISTED
    ]
    sel = dict(plan.selection)
    sel["species"] = len(plan.taxa)
    return ShardResult(
        out=out,
        fingerprint=plan.fingerprint,
        selection=sel,
        splits=summaries,
        resumed=resumed,
        kept_units=kept,
        written_units=len(todo),
        other_parts_units=len(plan.units) - len(mine),
        pending_units=len(missing),
        finalized=finalized,
        seconds=time.monotonic() - t_start,
        images_per_second=len(samples) / write_seconds if write_seconds and samples else 0.0,
        download=download_summary,
        warnings=plan.warnings,
        failed_samples=failed_samples,
    )


def _download_target(s: Sample, images: Path) -> Path:
    """Where a downloaded photo goes: its ``path`` under --images, else ``{key}{suffix}``."""
    from biotrove_cli.core.data.download import dest_name

    if s.path and not Path(s.path).is_absolute():
        return images / s.path
    return images / dest_name(s.url, s.key)


def _download_missing(
    samples: list[Sample],
    cfg: ShardConfig,
    out: Path,
    progress: ProgressFn | None,
    phase: PhaseFn | None,
) -> tuple[dict[str, Any] | None, int]:
    """Fetch the samples' photos that are not local (those with a URL); set their source.

    Returns the download summary (None when nothing needed fetching) and how many samples
    gained a local file.
    """
    from biotrove_cli import __version__
    from biotrove_cli.core.data.download import STATUS_FILE, DownloadJob, download_all

    images = Path(cfg.images)
    wanted = [s for s in samples if not s.source and s.url]
    if not wanted:
        return None, 0
    images.mkdir(parents=True, exist_ok=True)
    if phase is not None:
        phase("download", len(wanted))
    k, n = cfg.part
    # one status log per part: N machines never append to the same file
    status = STATUS_FILE if n == 1 else f"downloads.part-{k}-of-{n}.jsonl"
    summary = download_all(
        [DownloadJob(url=s.url, dest=_download_target(s, images)) for s in wanted],
        out / status,
        workers=cfg.download_workers,
        timeout=cfg.download_timeout,
        retries=cfg.download_retries,
        progress=progress,
        user_agent=f"biotrove/{__version__}",
    )
    log.info(
        f"download: {summary.downloaded} fetched, {summary.cached} already here, "
        f"{summary.failed} failed, {summary.skipped} skipped (failed for good earlier)"
    )
    gained = 0
    for s in wanted:
        target = _download_target(s, images)
        if target.is_file():
            s.source = str(target)
            gained += 1
    return summary.as_dict(), gained


def _interrupted(out: Path, done: dict | None, plan: Plan) -> BiotroveError:
    if done is None:
        doc_units = [{"split": u.split, "index": u.index} for u in plan.units]
        done = complete_units(out, doc_units, plan.fingerprint)
    return BiotroveError(
        f"interrupted: {len(done)} of {len(plan.units)} shards are complete in {out}",
        hint="run the same command again: it keeps the complete shards and redoes the rest",
        exit_code=130,
    )


def finalize_dataset(out: Path) -> ShardResult:
    """``biotrove shard --finalize DIR``: index a dataset whose parts were written separately."""
    t0 = time.monotonic()
    out = Path(out)
    manifest = finalize(out)
    doc = _read_json(out / PLAN)
    done = complete_units(out, doc["units"], doc["fingerprint"])
    sel = dict(doc.get("selection", {}))
    sel["species"] = manifest["counts"]["species"]
    return ShardResult(
        out=out,
        fingerprint=doc["fingerprint"],
        selection=sel,
        splits=summarize(doc, done),
        resumed=True,
        kept_units=len(done),
        written_units=0,
        other_parts_units=0,
        pending_units=0,
        finalized=True,
        seconds=time.monotonic() - t0,
        images_per_second=0.0,
    )
