"""``biotrove info`` of a dataset folder written by ``biotrove shard`` (or one split of it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.shards import read_sizes
from biotrove_cli.core.inspect.report import Report
from biotrove_cli.core.layout import MANIFEST, PLAN, SPLITS, TAXONOMY, shard_name, stats_name


def describe_shard_folder(path: str | Path):
    """The ``biotrove info DIR`` report of a dataset folder (or of one split folder in it).

    Works on a finished dataset (manifest.json), on one still being written (plan.json: how many
    planned shards are complete) and on a bare folder of shards with a sizes.json.
    """
    path = Path(path)
    root, only = path, None
    if not (path / PLAN).is_file() and not (path / MANIFEST).is_file():
        if path.name in SPLITS and (
            (path.parent / PLAN).is_file() or (path.parent / MANIFEST).is_file()
        ):
            root, only = path.parent, path.name

    def load(p: Path) -> dict[str, Any]:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    manifest = load(root / MANIFEST)
    plan = load(root / PLAN)
    if not manifest and not plan:  # a folder of shards with sizes.json, nothing else
        sizes = read_sizes(path)
        tars = sorted(path.glob("*.tar"))
        rep = Report("shards", f"{path.name}: {len(tars)} shards")
        rep.add("shards", "shards", len(tars))
        rep.add("shards", "samples (sizes.json)", sum(sizes.values()))
        rep.add("shards", "size_mb", round(sum(t.stat().st_size for t in tars) / 1e6, 2))
        rep.document = {"shards": len(tars), "samples": sum(sizes.values())}
        return rep

    args = manifest.get("args") or plan.get("args") or {}
    rep = Report("shards", f"{root.name}: biotrove shard dataset")
    if manifest:
        state = "complete"
    else:
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
                st = load(st_path)
                if st.get("final"):
                    complete += 1
                    break
                part += 1
        state = f"in progress: {complete} of {len(units)} planned shards complete"
    rep.add("dataset", "state", state)
    if manifest:
        rep.add("dataset", "created", manifest.get("created"))
        rep.add("dataset", "biotrove_version", manifest.get("biotrove_version"))
    rep.add(
        "dataset", "fingerprint", str(manifest.get("fingerprint") or plan.get("fingerprint"))[:16]
    )
    for m in manifest.get("metadata") or plan.get("metadata") or []:
        rep.add("dataset", "metadata", f"{m.get('path')} ({m.get('schema')}, {m.get('rows')} rows)")
    for key in (
        "resize_mode",
        "image_size",
        "caption",
        "samples_per_shard",
        "val_fraction",
        "min_per_species",
        "max_per_species",
        "seed",
    ):
        if key in args:
            rep.add("arguments", key, args[key])
    if args.get("categories"):
        rep.add("arguments", "categories", ", ".join(args["categories"]))
    sel = manifest.get("selection") or plan.get("selection") or {}
    for key, value in sel.items():
        if value:
            rep.add("selection", key.replace("_", " "), value)

    splits_doc = manifest.get("splits") or {}
    for split in SPLITS:
        if only and split != only:
            continue
        d = root / split
        if not d.is_dir() and split not in splits_doc:
            continue
        info = splits_doc.get(split)
        tars = sorted(d.glob("*.tar")) if d.is_dir() else []
        sizes = read_sizes(d)
        section = f"split {split}"
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
            planned = (plan.get("splits") or {}).get(split, {})
            rep.add(section, "planned shards", planned.get("shards"))
            rep.add(section, "planned samples", planned.get("samples"))
            rep.add(section, "tar files so far", len(tars))
        if sizes:
            rep.add(section, "sizes.json samples", sum(sizes.values()))
        if tars:
            first, last = tars[0].name, tars[-1].name
            rep.add(section, "files", first if first == last else f"{first} .. {last}")
    tax = root / TAXONOMY
    if tax.is_file() and not only:
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
    counts = manifest.get("counts") or {}
    timings = manifest.get("timings") or {}
    if timings.get("shard_seconds") is not None:
        rep.add("timings", "shard_seconds", timings.get("shard_seconds"))
    last_run = timings.get("last_run") or {}
    if last_run.get("images_per_second"):
        rep.add("timings", "last run images/s", last_run.get("images_per_second"))
    rep.document = {
        "state": state,
        "fingerprint": manifest.get("fingerprint") or plan.get("fingerprint"),
        "counts": counts,
        "splits": splits_doc or plan.get("splits") or {},
        "selection": sel,
        "args": args,
    }
    return rep
