"""``biotrove info`` of a dataset folder written by ``biotrove shard`` (or one split of it).

Works on a finished dataset (manifest.json), on one still being written (plan.json: how many
planned shards are complete) and on a bare folder of shards with a sizes.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.shards import read_sizes
from biotrove_cli.core.inspect.report import Report
from biotrove_cli.core.layout import MANIFEST, PLAN, SPLITS, TAXONOMY, shard_name, stats_name

ARGUMENTS = (
    "resize_mode",
    "image_size",
    "caption",
    "samples_per_shard",
    "val_fraction",
    "min_per_species",
    "max_per_species",
    "seed",
)


def _load(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_shard_folder(path: str | Path) -> Report:
    """The ``biotrove info DIR`` report of a dataset folder (or of one split folder in it)."""
    path = Path(path)
    root, only = path, None
    if not (path / PLAN).is_file() and not (path / MANIFEST).is_file():
        if path.name in SPLITS and (
            (path.parent / PLAN).is_file() or (path.parent / MANIFEST).is_file()
        ):
            root, only = path.parent, path.name
    manifest = _load(root / MANIFEST)
    plan = _load(root / PLAN)
    if not manifest and not plan:  # a folder of shards with sizes.json, nothing else
        return _describe_bare_split(path)

    rep = Report("shards", f"{root.name}: biotrove shard dataset")
    state = "complete" if manifest else _progress(root, plan)
    _add_dataset(rep, state, manifest, plan)
    splits_doc = manifest.get("splits") or {}
    for split in SPLITS:
        if only and split != only:
            continue
        d = root / split
        if d.is_dir() or split in splits_doc:
            _add_split(rep, d, splits_doc.get(split), (plan.get("splits") or {}).get(split, {}))
    if (root / TAXONOMY).is_file() and not only:
        _add_taxonomy(rep, root / TAXONOMY)
    timings = manifest.get("timings") or {}
    if timings.get("shard_seconds") is not None:
        rep.add("timings", "shard_seconds", timings.get("shard_seconds"))
    last_run = timings.get("last_run") or {}
    if last_run.get("images_per_second"):
        rep.add("timings", "last run images/s", last_run.get("images_per_second"))
    rep.document = {
        "state": state,
        "fingerprint": manifest.get("fingerprint") or plan.get("fingerprint"),
        "counts": manifest.get("counts") or {},
        "splits": splits_doc or plan.get("splits") or {},
        "selection": manifest.get("selection") or plan.get("selection") or {},
        "args": manifest.get("args") or plan.get("args") or {},
    }
    return rep


def describe_remote_shards(spec: str) -> Report:
    """``biotrove info URL``: remote shards (URLs, brace patterns, ``pipe:`` commands), found
    and counted the way training finds them: a dataset folder's ``manifest.json``, else the
    shards and what the ``sizes.json`` beside them says they hold."""
    from biotrove_cli.core.data import urls
    from biotrove_cli.core.data.shards import open_shards

    folder = "{" not in spec and ".tar" not in spec and not spec.lower().startswith(urls.PIPE)
    manifest = _remote_manifest(urls.join(spec.rstrip("/"), MANIFEST)) if folder else {}
    if manifest.get("splits"):
        rep = Report("shards", f"{spec}: biotrove shard dataset")
        _add_dataset(rep, "complete", manifest, {})
        for split, info in manifest["splits"].items():
            for key in ("shards", "samples", "species", "failed"):
                rep.add(f"split {split}", key, (info or {}).get(key))
        keys = ("fingerprint", "counts", "splits", "args")
        rep.document = {"state": "complete", **{k: manifest.get(k) for k in keys}}
        return rep
    shards = open_shards(spec, split="train")
    total = shards.total
    rep = Report("shards", f"{spec}: {len(shards)} shards")
    rep.add("shards", "shards", len(shards))
    rep.add("shards", "samples (sizes.json)", total if total is not None else shards.sizes_note)
    first, last = shards.locations[0], shards.locations[-1]
    rep.add("shards", "first", first)
    if last != first:
        rep.add("shards", "last", last)
    rep.document = {"shards": len(shards), "samples": total, "locations": shards.locations}
    return rep


def _remote_manifest(where: str) -> dict[str, Any]:
    """A remote dataset folder's manifest.json ({} when it has none)."""
    from biotrove_cli.core.data.shards import fetch
    from biotrove_cli.core.data.streams import SourceError

    try:
        data = json.loads(fetch(where))
    except (SourceError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe_bare_split(path: Path) -> Report:
    sizes = read_sizes(path)
    tars = sorted(path.glob("*.tar"))
    rep = Report("shards", f"{path.name}: {len(tars)} shards")
    rep.add("shards", "shards", len(tars))
    rep.add("shards", "samples (sizes.json)", sum(sizes.values()))
    rep.add("shards", "size_mb", round(sum(t.stat().st_size for t in tars) / 1e6, 2))
    rep.document = {"shards": len(tars), "samples": sum(sizes.values())}
    return rep


def _progress(root: Path, plan: dict[str, Any]) -> str:
    """How far a dataset still being written is: planned units whose final part is done."""
    units = plan.get("units") or []
    complete = 0
    for u in units:
        d = root / u["split"]
        idx = int(u["index"])
        part = 0
        while True:
            st_path = d / stats_name(shard_name(idx, part))
            if not (d / shard_name(idx, part)).is_file() or not st_path.is_file():
                break
            if _load(st_path).get("final"):
                complete += 1
                break
            part += 1
    return f"in progress: {complete} of {len(units)} planned shards complete"


def _add_dataset(rep: Report, state: str, manifest: dict[str, Any], plan: dict[str, Any]) -> None:
    rep.add("dataset", "state", state)
    if manifest:
        rep.add("dataset", "created", manifest.get("created"))
        rep.add("dataset", "biotrove_version", manifest.get("biotrove_version"))
    rep.add(
        "dataset", "fingerprint", str(manifest.get("fingerprint") or plan.get("fingerprint"))[:16]
    )
    for m in manifest.get("metadata") or plan.get("metadata") or []:
        rep.add("dataset", "metadata", f"{m.get('path')} ({m.get('schema')}, {m.get('rows')} rows)")
    args = manifest.get("args") or plan.get("args") or {}
    for key in ARGUMENTS:
        if key in args:
            rep.add("arguments", key, args[key])
    if args.get("categories"):
        rep.add("arguments", "categories", ", ".join(args["categories"]))
    sel = manifest.get("selection") or plan.get("selection") or {}
    for key, value in sel.items():
        if value:
            rep.add("selection", key.replace("_", " "), value)


def _add_split(rep: Report, d: Path, info: dict[str, Any] | None, planned: dict[str, Any]) -> None:
    """One split: the manifest's counts when finished, else the plan's and what exists so far."""
    tars = sorted(d.glob("*.tar")) if d.is_dir() else []
    sizes = read_sizes(d)
    section = f"split {d.name}"
    if info:
        rep.add(section, "shards", info.get("shards"))
        rep.add(section, "samples", info.get("samples"))
        rep.add(section, "species", info.get("species"))
        rep.add(section, "failed", info.get("failed"))
        for reason, n in (info.get("failures") or {}).items():
            rep.add(section, f"failed: {reason}", n)
        for note, n in (info.get("converted") or {}).items():
            rep.add(section, f"converted: {note}", n)
        rep.add(section, "size_mb", round((info.get("bytes") or 0) / 1e6, 2))
    else:
        rep.add(section, "planned shards", planned.get("shards"))
        rep.add(section, "planned samples", planned.get("samples"))
        rep.add(section, "tar files so far", len(tars))
    if sizes:
        rep.add(section, "sizes.json samples", sum(sizes.values()))
    if tars:
        first, last = tars[0].name, tars[-1].name
        rep.add(section, "files", first if first == last else f"{first} .. {last}")


def _add_taxonomy(rep: Report, tax: Path) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(tax)
        rep.add("taxonomy", "species", table.num_rows)
        for rank in ("kingdom", "phylum", "class", "order", "family", "genus"):
            if rank in table.column_names:
                names = {str(v).lower() for v in table.column(rank).to_pylist() if v}
                rep.add("taxonomy", rank, len(names))
    except Exception as exc:  # a damaged index must not hide the rest of the report
        rep.add("taxonomy", "error", f"unreadable taxonomy.parquet ({exc})")
