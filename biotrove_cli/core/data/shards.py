"""Reading shards back: which tar files a user means, how many samples they hold, and the tar
reader that turns them into samples.

The folder a dataset lives in is described (and its file names owned) by
:mod:`biotrove_cli.core.layout`; what one sample holds, by :mod:`biotrove_cli.core.data.sample`.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError
from biotrove_cli.core.layout import SHARD_GLOB, SIZES, SPLITS, TAXONOMY


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
