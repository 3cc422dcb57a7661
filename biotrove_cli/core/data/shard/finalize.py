"""The output folder: the guard that refuses another dataset (:func:`prepare_output`), and
**finalize** (:func:`finalize`): once every unit of the plan is complete, write ``sizes.json``
per split, ``taxonomy.parquet`` and ``manifest.json``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.shard.files import FILE_MODE, read_json, write_json
from biotrove_cli.core.data.shard.plan import FORMAT, ShardPlan
from biotrove_cli.core.data.shard.unit import complete_units
from biotrove_cli.core.errors import BiotroveError, InputError, OutputExistsError
from biotrove_cli.core.layout import MANIFEST, PLAN, SIZES, SPLITS, TAXONOMY, shard_name
from biotrove_cli.core.taxonomy.lineage import Taxon


def _may_precede_plan(name: str) -> bool:
    """What an output folder may hold before its plan.json: download logs, the temp file of a
    plan write that was killed, and lock files. Anything else may be someone's data, which is
    never touched.
    (A --part run that started a moment earlier writes plan.json before any split folder.)"""
    from biotrove_cli.core.locks import is_lock_file

    return (
        name.startswith("downloads")
        or (name.startswith(".") and name.endswith(".tmp"))
        or is_lock_file(name)  # the lock of this job (or of another --part)
    )


# -- the output folder ------------------------------------------------------------------------
def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_output(out: Path, plan: ShardPlan) -> bool:
    """Check that ``out`` is empty or holds this very plan; write ``plan.json``.

    Returns True when the folder already held this plan (a resume).

    Raises:
        OutputExistsError: ``out`` holds another dataset, or files that are not a dataset.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: is a file, not a folder", hint="pick a folder")
    plan_path = out / PLAN
    if plan_path.is_file():
        old = read_json(plan_path)
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
    write_json(plan_path, plan.document())
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
    doc = read_json(out / PLAN)
    if not isinstance(doc, dict) or "units" not in doc:
        raise InputError(
            f"{out}: no plan.json here, so nothing to finalize",
            hint="pass the --out folder of a `biotrove shard` run",
        )
    units = doc["units"]
    done = complete_units(out, units, doc["fingerprint"])
    missing = [i for i in range(len(units)) if i not in done]
    if missing:
        raise _incomplete(out, units, missing)
    summaries = summarize(doc, done)
    _write_sizes(out, units, done)
    taxa = _write_taxonomy(out, doc, units, done)
    manifest = _manifest(doc, summaries, done, len(taxa), run)
    write_json(out / MANIFEST, manifest)
    return manifest


def _incomplete(out: Path, units: list[dict[str, Any]], missing: list[int]) -> IncompleteError:
    """The error naming the missing shards and, when the stats tell, the parts that owe them."""
    n_parts = {
        st.get("writer", {}).get("part")
        for st in (read_json(p) for split in SPLITS for p in (out / split).glob("*.stats.json"))
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
    return IncompleteError(
        f"{out}: {len(missing)} of {len(units)} planned shards are not written yet "
        f"({', '.join(names[:5])}{'...' if len(names) > 5 else ''}){owners}",
        hint="run the missing parts (the same command with their --part K/N), or the "
        "command without --part, then finalize again",
    )


def _write_sizes(out: Path, units: list[dict[str, Any]], done: dict[int, dict]) -> None:
    """``sizes.json`` per split (shard name -> samples); temp files of killed writers go."""
    from biotrove_cli.core.io import cleanup_temp_files

    for split in SPLITS:
        d = out / split
        if not d.is_dir():
            continue
        cleanup_temp_files(d)
        sizes: dict[str, int] = {}
        for ordinal in range(len(units)):
            if units[ordinal]["split"] == split:
                sizes.update(done[ordinal]["shards"])
        write_json(d / SIZES, sizes)


def _write_taxonomy(
    out: Path, doc: dict[str, Any], units: list[dict[str, Any]], done: dict[int, dict]
) -> list[Taxon]:
    """``taxonomy.parquet``: the planned species that have samples, with per-split counts."""
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    counts: dict[str, dict[str, int]] = {}
    for ordinal, st in done.items():
        split = units[ordinal]["split"]
        for key, n in st["species"].items():
            c = counts.setdefault(key, {})
            c[split] = c.get(split, 0) + int(n)
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
    return taxa


def _manifest(
    doc: dict[str, Any],
    summaries: list[SplitSummary],
    done: dict[int, dict],
    n_species: int,
    run: dict | None,
) -> dict[str, Any]:
    """``manifest.json``: arguments, counts, biotrove version, timings."""
    from biotrove_cli import __version__

    failures: Counter = Counter()
    converted: Counter = Counter()
    for s in summaries:
        failures.update(s.failures)
        converted.update(s.converted)
    shard_seconds = sum(float(st["seconds"]) for st in done.values())
    written = sum(s.written for s in summaries)
    return {
        "format": FORMAT,
        "biotrove_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": doc["fingerprint"],
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
            "species": n_species,
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
