"""The files of a dataset as the writer publishes them: atomic, readable by all (datasets are
shared), and each unit's files found by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from biotrove_cli.core.io import atomic_open
from biotrove_cli.core.layout import shard_name

FILE_MODE = 0o644  # shards are shared datasets (the temp files of atomic writes are 0600)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON, readable by the group/others like the tars (datasets are shared)."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        fh.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (a torn or foreign file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def unit_files(split_dir: Path, index: int) -> list[Path]:
    """Every file (tars, stats, temp files) that belongs to unit ``index``."""
    stem = shard_name(index).removesuffix(".tar")
    prefixes = (f"{stem}.", f"{stem}_")
    out = []
    if split_dir.is_dir():
        for p in split_dir.iterdir():
            name = p.name.lstrip(".")
            if name.startswith(prefixes):
                out.append(p)
    return out
