"""``biotrove info`` of a folder of photos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.inspect.report import Report


def walk_files(folder: Path, limit: int | None = None) -> Iterator[Path]:
    """Files under ``folder`` in a stable order, hidden folders skipped, at most ``limit``."""
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
    for p in walk_files(path):
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
