"""Describe what is at a path (shard folder, run, checkpoint, bundle, metadata table)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError


@dataclass
class Report:
    kind: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, key: str, value: Any) -> None:
        self.rows.append({"section": section, "key": key, "value": value})


def human_size(n: int) -> str:
    """1536 -> '1.5 KB' (binary units, the way ls -h counts)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def describe(path: str | Path) -> Report:
    """Dispatch on what ``path`` is; raise InputError when it is nothing biotrove knows."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    from biotrove_cli.core.models.load import BUNDLE_CONFIG

    if path.is_dir():
        if (path / "manifest.json").is_file() or (path / "plan.json").is_file():
            from biotrove_cli.core.data.shards import describe_shard_folder

            return describe_shard_folder(path)
        if (path / BUNDLE_CONFIG).is_file() or (path / "onnx_config.json").is_file():
            return describe_bundle(path)
        if (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
            from biotrove_cli.core.training.run import describe_run

            return describe_run(path)
        if (path / "sizes.json").is_file():
            from biotrove_cli.core.data.shards import describe_shard_folder

            return describe_shard_folder(path)
        from biotrove_cli.core.data.images import is_image_path

        if any(is_image_path(p) for p in _walk_files(path, limit=10_000)):
            return describe_image_folder(path)
        raise InputError(
            f"{path}: not a shard folder, run folder, model bundle or photo folder",
            hint="shard folders hold manifest.json; runs hold checkpoints/; "
            "bundles hold open_clip_config.json",
        )
    from biotrove_cli.core.taxonomy.readers import table_suffix

    if table_suffix(path) in (".parquet", ".pq", ".csv", ".tsv"):
        return describe_table(path)
    return describe_checkpoint(path)


def _walk_files(folder: Path, limit: int | None = None):
    n = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            yield Path(root) / name
            n += 1
            if limit is not None and n >= limit:
                return


def describe_image_folder(path: Path, sample: int = 200) -> Report:
    """A folder of photos: how many of each format, how big, and a sample of their sizes."""
    from collections import Counter

    from PIL import Image

    from biotrove_cli.core.data.images import is_image_path

    rep = Report("images", f"{path.name}: photo folder")
    formats: Counter[str] = Counter()
    total = 0
    images = []
    for p in _walk_files(path):
        if is_image_path(p):
            formats[p.suffix.lower().lstrip(".")] += 1
            total += p.stat().st_size
            images.append(p)
    rep.add("photos", "count", len(images))
    rep.add("photos", "formats", ", ".join(f"{k} {v}" for k, v in formats.most_common()))
    rep.add("photos", "total size", human_size(total))
    sizes: Counter[tuple[int, int]] = Counter()
    unreadable = 0
    step = max(1, len(images) // sample)
    for p in images[::step][:sample]:
        try:
            with Image.open(p) as im:
                sizes[im.size] += 1
        except Exception:  # a broken photo is a finding here, not an error
            unreadable += 1
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(4))
    rep.add("sample", "photos read", sum(sizes.values()) + unreadable)
    rep.add("sample", "most common sizes", common)
    rep.add("sample", "unreadable", unreadable)
    rep.document = {"photos": len(images), "formats": dict(formats), "bytes": total}
    return rep


def describe_table(path: Path) -> Report:
    from biotrove_cli.core.errors import SchemaError
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import RANKS
    from biotrove_cli.core.taxonomy.readers import _read_table, read_metadata

    try:
        meta = read_metadata(path)
    except SchemaError:
        # not metadata (e.g. an eval report): still say what the table holds
        table = _read_table(path)
        rep = Report("table", f"{path.name}: table")
        rep.add("table", "rows", table.num_rows)
        rep.add("table", "columns", ", ".join(table.column_names))
        rep.document = {"rows": table.num_rows, "columns": table.column_names}
        return rep
    bank = LabelBank.from_taxa(meta.taxa())
    rep = Report("metadata", f"{path.name}: {meta.schema} metadata")
    rep.add("table", "schema", meta.schema)
    rep.add("table", "rows", len(meta))
    rep.add("table", "columns", ", ".join(meta.columns))
    if meta.missing_ranks:
        rep.add("table", "missing ranks", ", ".join(meta.missing_ranks))
    for rank in RANKS:
        rep.add("taxa", rank.value, len(bank.classes(rank)))
    rep.add("taxa", "rows without a species", bank.skipped_rows)
    rep.document = {
        "schema": meta.schema,
        "rows": len(meta),
        "taxa": {r.value: len(bank.classes(r)) for r in RANKS},
    }
    return rep


def describe_checkpoint(path: Path) -> Report:
    from biotrove_cli.core.models.checkpoint import extract_state_dict, safe_load
    from biotrove_cli.core.models.load import infer_arch_candidates, state_dict_shapes

    obj = safe_load(path)
    sd = extract_state_dict(obj, str(path))
    rep = Report("checkpoint", f"{path.name}: checkpoint")
    rep.add("file", "size", human_size(path.stat().st_size))
    n_params = sum(int(v.numel()) for v in sd.values())
    rep.add("weights", "tensors", len(sd))
    rep.add("weights", "parameters", n_params)
    try:
        shapes = state_dict_shapes(sd)
        for k, v in shapes.items():
            rep.add("architecture", k, v)
        rep.add("architecture", "matches", ", ".join(infer_arch_candidates(sd)) or "(none)")
    except InputError:
        raise
    except Exception as exc:  # not a ViT CLIP: say so, still describe the file
        rep.add("architecture", "matches", f"unknown ({exc})")
    if isinstance(obj, dict):
        for key in ("epoch", "step", "name", "biotrove_version"):
            if key in obj:
                rep.add("checkpoint", key, obj[key])
        rep.add("checkpoint", "optimizer state", "optimizer" in obj)
        cfg = obj.get("config")
        if isinstance(cfg, dict):
            rep.add("checkpoint", "arch (stored config)", (cfg.get("model") or {}).get("arch"))
    rep.document = {"parameters": n_params}
    return rep


def describe_bundle(path: Path) -> Report:
    import json

    from biotrove_cli.core.models.load import (
        BUNDLE_CONFIG,
        BUNDLE_EMBEDDINGS,
        BUNDLE_LABELS,
        BUNDLE_META,
    )

    onnx = not (path / BUNDLE_CONFIG).is_file()
    rep = Report("bundle", f"{path.name}: exported model ({'ONNX' if onnx else 'open_clip'})")
    cfg = json.loads((path / ("onnx_config.json" if onnx else BUNDLE_CONFIG)).read_text())
    meta = json.loads((path / BUNDLE_META).read_text()) if (path / BUNDLE_META).is_file() else {}
    for key in (
        "arch",
        "quick_gelu",
        "dtype",
        "source",
        "source_sha256",
        "biotrove_version",
        "created",
    ):
        if key in meta:
            rep.add("bundle", key, meta[key])
    mc = cfg.get("model_cfg", {})
    rep.add("model", "embed_dim", mc.get("embed_dim"))
    rep.add("model", "image_size", mc.get("vision_cfg", {}).get("image_size"))
    for f in sorted(path.iterdir()):
        if f.is_file():
            rep.add("files", f.name, human_size(f.stat().st_size))
    if (path / BUNDLE_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        bank = LabelBank.load(path / BUNDLE_LABELS)
        rep.add("labels", "classes", len(bank))
        rep.add("labels", "precomputed embeddings", (path / BUNDLE_EMBEDDINGS).is_file())
    rep.document = {"bundle": meta}
    return rep
