"""The biotrove shard format, and reading it back.

A dataset folder written by ``biotrove shard``::

    OUT/
      manifest.json           arguments, counts, biotrove version, timings
      taxonomy.parquet        every species: lineage, species key, per-split counts
      plan.json               the deterministic plan (resume / --part / --finalize)
      train/ val/ unseen/     one folder per split
        shard-000000.tar      WebDataset tar
        shard-000000.stats.json   written after the tar: count, successes, failures by reason
        sizes.json            shard name -> sample count (what open_clip reads)

Each sample in a tar: ``{key}.jpg``, ``{key}.txt`` (the default caption), one
``{key}.{type}.txt`` per BioTrove text type, and ``{key}.json`` (lineage, species key, photo id,
source, original size). Keys never contain dots or slashes, so stock webdataset/open_clip group
the files by key as they are.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError
from biotrove_cli.core.taxonomy.lineage import Taxon

SPLITS = ("train", "val", "unseen")
SHARD_GLOB = "shard-*.tar"
MANIFEST = "manifest.json"
TAXONOMY = "taxonomy.parquet"
PLAN = "plan.json"
SIZES = "sizes.json"


def shard_name(index: int, part: int = 0) -> str:
    """``shard-000012.tar``; an overflow part of a unit (``--max-shard-bytes``) adds ``_1``."""
    return f"shard-{index:06d}.tar" if part == 0 else f"shard-{index:06d}_{part}.tar"


def stats_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + ".stats.json"


def _expand(pattern: str) -> list[str]:
    import braceexpand

    out: list[str] = []
    for part in pattern.split("::"):
        out.extend(braceexpand.braceexpand(part))
    return out


def resolve_shards(spec: str | Path, split: str | None = "train") -> list[Path]:
    """The tar files a user means by ``spec``.

    Accepts a dataset folder (its ``split`` subfolder), a split folder, one ``.tar``, a brace
    pattern (``dir/shard-{000000..000009}.tar``) or a ``::``-separated list.

    Raises:
        InputError: nothing matches, or named shards do not exist.
    """
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        if split and (path / split).is_dir():
            path = path / split
        tars = sorted(path.glob(SHARD_GLOB)) or sorted(path.glob("*.tar"))
        if not tars:
            where = f"{path}" + (f" (split {split!r})" if split else "")
            splits = [s for s in SPLITS if (Path(text) / s).is_dir()]
            raise InputError(
                f"{where}: no shards (*.tar) in this folder",
                hint=(
                    f"splits here: {', '.join(splits)}"
                    if splits
                    else "write shards with `biotrove shard`, or point at the folder holding *.tar"
                ),
            )
        return tars
    if "{" in text or "::" in text:
        files = [Path(p) for p in _expand(text)]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} of {len(files)} shards in {text!r} do not exist "
                f"(e.g. {missing[0]})",
                hint="check the brace pattern",
            )
        return files
    if path.is_file():
        return [path]
    raise InputError(
        f"{text}: no such shard folder or file",
        hint="pass a folder written by `biotrove shard`, a .tar or a brace pattern",
    )


def dataset_root(shards: list[Path]) -> Path | None:
    """The dataset folder (holding taxonomy.parquet) the shards belong to, if any."""
    if not shards:
        return None
    folder = shards[0].parent
    for cand in (folder, folder.parent):
        if (cand / TAXONOMY).is_file():
            return cand
    return None


def read_sizes(split_dir: Path) -> dict[str, int]:
    p = split_dir / SIZES
    if not p.is_file():
        return {}
    try:
        return {k: int(v) for k, v in json.loads(p.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def count_samples(shards: list[Path]) -> int | None:
    """Total samples from sizes.json beside the shards; None when unknown."""
    total = 0
    cache: dict[Path, dict[str, int]] = {}
    for s in shards:
        sizes = cache.setdefault(s.parent, read_sizes(s.parent))
        if s.name not in sizes:
            return None
        total += sizes[s.name]
    return total


def split_key(name: str) -> tuple[str, str]:
    """``dir/abc.taxon.txt`` -> (``abc``, ``taxon.txt``), webdataset's grouping rule."""
    base = os.path.basename(name)
    if "." not in base:
        return base, ""
    key, ext = base.split(".", 1)
    prefix = os.path.dirname(name)
    return (f"{prefix}/{key}" if prefix else key), ext


def iter_tar(path: str | Path, errors: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Samples of one tar as dicts ``{"__key__", "__shard__", ext: bytes, ...}``.

    A truncated or corrupt tar ends early; the problem is appended to ``errors`` (when given)
    instead of raising, so one bad shard does not end a long job.
    """
    path = Path(path)
    current: dict[str, Any] | None = None
    try:
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                key, ext = split_key(member.name)
                fh = tf.extractfile(member)
                if fh is None:
                    continue
                data = fh.read()
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__shard__": str(path)}
                current[ext] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        if errors is None:
            raise InputError(
                f"{path}: unreadable shard ({exc})",
                hint="re-run `biotrove shard` on the same folder to redo it",
            ) from exc
        errors.append(f"{path}: {exc}")
    if current is not None:
        yield current


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    raw = sample.get("json")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}


def taxon_from_meta(meta: dict[str, Any]) -> Taxon:
    """The sample's Taxon from its ``.json`` (as written by ``biotrove shard``)."""
    lin = meta.get("lineage") or {}
    return Taxon.from_parts(
        lin.get("kingdom", ""),
        lin.get("phylum", ""),
        lin.get("class", ""),
        lin.get("order", ""),
        lin.get("family", ""),
        lin.get("genus", ""),
        meta.get("epithet") or lin.get("species", ""),
        scientific_name=meta.get("scientific_name", ""),
        common_name=meta.get("common_name", ""),
    )


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def sample_image_bytes(sample: dict[str, Any]) -> bytes | None:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None
