"""Small text and data helpers shared by the core and the renderers: counts with their noun,
human file sizes, and plain JSON data from anything a checkpoint or a record may hold."""

from __future__ import annotations

import math
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``plural(1, 'image')`` -> ``1 image``; ``plural(3, 'image')`` -> ``3 images``."""
    word = noun if count == 1 else (plural_form or noun + "s")
    return f"{count} {word}"


def human_size(n: int | float) -> str:
    """1536 -> '1.5 KB' (binary units, the way ls -h counts)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def plain(value: Any, *, strict: bool = False) -> Any:
    """JSON-ready data: numbers stay numbers (NaN and infinities become None), times become
    ISO-8601, enums their value, paths strings; numpy/torch scalars become Python scalars.
    With ``strict`` anything else becomes its ``str`` (checkpoint metadata may hold objects)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return plain(value.value, strict=strict)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, strict=strict) for v in value]
    if callable(getattr(value, "tolist", None)) and getattr(value, "ndim", 0) >= 1:
        return plain(value.tolist(), strict=strict)  # numpy arrays, tensors (embeddings)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        try:
            return plain(value.item(), strict=strict)
        except (TypeError, ValueError):
            return str(value)
    return str(value) if strict else value
