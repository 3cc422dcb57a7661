"""Writing one unit (:func:`write_unit`): each unit becomes ``{split}/shard-{index:06d}.tar``
(plus ``_1``, ``_2``... parts when ``--max-shard-bytes`` is reached), each followed by its
``.stats.json``. Both are written atomically; a unit is complete only when the stats of its
final part exist (:func:`complete_units`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.sample import caption_members, make_meta, sample_members, taxon_fields
from biotrove_cli.core.data.shard.convert import ImageFail, process_image
from biotrove_cli.core.data.shard.files import FILE_MODE, read_json, unit_files, write_json
from biotrove_cli.core.data.shard.plan import Unit
from biotrove_cli.core.data.shard.tar import TarOut, closed_size, member_bytes
from biotrove_cli.core.layout import shard_name, stats_name
from biotrove_cli.core.taxonomy.lineage import Taxon

MAX_FAILED_LISTED = 50  # failed samples named per stats file


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
    from biotrove_cli.core.io import atomic_open

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
            got = per_taxon[t] = (caption_members(t, st.caption, st.captions), taxon_fields(t))
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
                except (ImageError, ImageFail) as exc:
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
                meta = make_meta(
                    s.key, s.photo_id, fields, unit.split, s.source, s.url, orig, stored
                )
                members = sample_members(s.key, jpg, texts, meta)
                if st.max_shard_bytes and count:
                    grown = tar.offset + member_bytes(members)
                    if closed_size(grown) > st.max_shard_bytes:
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
        write_json(split_dir / stats_name(name), stats)
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


def complete_units(out: Path, units: list[dict[str, Any]], fingerprint: str) -> dict[int, dict]:
    """Ordinal -> combined stats, for every unit whose files are all complete on disk."""
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
            stats = read_json(out / split / sname)
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
