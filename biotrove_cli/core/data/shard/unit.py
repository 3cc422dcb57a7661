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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.images import ImageError, read_bytes
from biotrove_cli.core.data.sample import caption_members, make_meta, sample_members, taxon_fields
from biotrove_cli.core.data.shard.convert import ImageFail, process_image
from biotrove_cli.core.data.shard.files import FILE_MODE, read_json, unit_files, write_json
from biotrove_cli.core.data.shard.plan import Sample, Unit
from biotrove_cli.core.data.shard.tar import TarOut, closed_size, member_bytes
from biotrove_cli.core.io import atomic_open
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
    return _UnitWriter(unit, st, tick, parent_pid).run()


@dataclass
class _PartTally:
    """What one tar of a unit holds, and the samples it skipped."""

    count: int = 0
    failures: Counter = field(default_factory=Counter)
    converted: Counter = field(default_factory=Counter)
    species: Counter = field(default_factory=Counter)
    failed: list[dict[str, str]] = field(default_factory=list)


class _UnitWriter:
    """One unit's tars in turn (an overflow part starts where the last one stopped), each
    followed by its stats."""

    def __init__(
        self, unit: Unit, st: WriteSettings, tick: Callable[[int], None] | None, parent_pid: int
    ):
        self.unit = unit
        self.st = st
        self.tick = tick
        self.parent_pid = parent_pid
        self.split_dir = Path(st.out) / unit.split
        self.pos = 0  # the next sample of the unit
        self.host = socket.gethostname()
        # what only depends on the taxon is made once per taxon: captions and the lineage fields
        self.per_taxon: dict[Taxon, tuple[list[tuple[str, bytes]], dict[str, Any]]] = {}

    def run(self) -> dict[str, Any]:
        self.split_dir.mkdir(parents=True, exist_ok=True)
        for p in unit_files(self.split_dir, self.unit.index):
            with contextlib.suppress(OSError):
                p.unlink()
        started = time.monotonic()
        parts: list[dict[str, Any]] = []
        part = 0
        while True:
            name = shard_name(self.unit.index, part)
            t0 = time.monotonic()
            tally, final = self._write_tar(name)
            stats = self._stats(name, part, final, tally, time.monotonic() - t0)
            if final:
                stats["planned"] = len(self.unit.samples)
                stats["parts"] = part + 1
                stats["unit_seconds"] = round(time.monotonic() - started, 4)
            write_json(self.split_dir / stats_name(name), stats)
            parts.append(stats)
            if final:
                return combine_unit_stats(parts)
            part += 1

    def _write_tar(self, name: str) -> tuple[_PartTally, bool]:
        """Write samples into tar ``name`` until the unit ends (final) or the tar is full."""
        samples = self.unit.samples
        tally = _PartTally()
        more = False
        with atomic_open(self.split_dir / name, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            tar = TarOut(fh)
            while self.pos < len(samples):
                if not _parent_alive(self.parent_pid):
                    raise SystemExit(1)  # orphaned by a killed parent: publish nothing
                encoded = self._encode(samples[self.pos], name, tally)
                if encoded is not None:
                    members, species_key, note = encoded
                    if self.st.max_shard_bytes and tally.count:
                        grown = tar.offset + member_bytes(members)
                        if closed_size(grown) > self.st.max_shard_bytes:
                            more = True  # this sample opens the next overflow tar
                            break
                    tar.add_many(members)
                    tally.count += 1
                    tally.species[species_key] += 1
                    if note:
                        tally.converted[note] += 1
                self.pos += 1
                if self.tick is not None:
                    self.tick(1)
            tar.close()
        return tally, not more

    def _encode(
        self, s: Sample, name: str, tally: _PartTally
    ) -> tuple[list[tuple[str, bytes]], str, str] | None:
        """The sample's tar members, species key and conversion note; None when its image is
        bad (counted in ``tally``)."""
        st = self.st
        try:
            if not s.source:
                raise ImageError(*(s.problem or ("missing", s.path or s.photo_id or s.url)))
            jpg, orig, stored, note = process_image(
                read_bytes(s.source), s.source, st.resize_mode, st.image_size, st.jpeg_quality
            )
        except (ImageError, ImageFail) as exc:
            bad = {
                "key": s.key,
                "source": s.source or s.path or s.photo_id or s.url,
                "reason": exc.reason,
                "detail": exc.detail,
            }
            if st.strict:
                raise StrictStop(json.dumps({**bad, "shard": f"{self.unit.split}/{name}"})) from exc
            tally.failures[exc.reason] += 1
            if len(tally.failed) < MAX_FAILED_LISTED:
                tally.failed.append(bad)
            return None
        captions, fields = self._taxon_parts(s.taxon)
        meta = make_meta(s.key, s.photo_id, fields, self.unit.split, s.source, s.url, orig, stored)
        return sample_members(s.key, jpg, captions, meta), fields["species_key"], note

    def _taxon_parts(self, t: Taxon) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        got = self.per_taxon.get(t)
        if got is None:
            st = self.st
            got = self.per_taxon[t] = (caption_members(t, st.caption, st.captions), taxon_fields(t))
        return got

    def _stats(
        self, name: str, part: int, final: bool, tally: _PartTally, seconds: float
    ) -> dict[str, Any]:
        """The ``.stats.json`` of tar ``name``."""
        return {
            "shard": name,
            "split": self.unit.split,
            "unit": self.unit.index,
            "part": part,
            "final": final,
            "count": tally.count,
            "successes": tally.count,
            "failed": sum(tally.failures.values()),
            "failures": dict(sorted(tally.failures.items())),
            "converted": dict(sorted(tally.converted.items())),
            "failed_samples": tally.failed,
            "species": dict(sorted(tally.species.items())),
            "bytes": (self.split_dir / name).stat().st_size,
            "seconds": round(seconds, 4),
            "plan": self.st.fingerprint,
            "writer": {"part": self.st.part_label, "host": self.host, "pid": os.getpid()},
        }


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
