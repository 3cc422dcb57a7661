"""How an evaluation section names things: a series per (model, mode, text type), named by the
parts that vary; rank levels; and the records' numbers (NaN and empty cells are missing)."""

from __future__ import annotations

import math
from typing import Any

Key = tuple[str, str, str]  # (model, mode, text type) of a series


def unique(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))


def series_keys(records: list[dict[str, Any]]) -> list[Key]:
    """Every (model, mode, text type) of the records, in their order."""
    return unique((r["model"], r.get("mode") or "", r.get("text_type") or "") for r in records)


def series_names(keys: list[Key]) -> dict[Key, str]:
    """A short name per series: the parts of (model, mode, text type) that vary (the model
    alone when none does)."""
    vary = [len({k[i] for k in keys}) > 1 for i in range(3)]
    return {k: " · ".join(p for p, v in zip(k, vary, strict=True) if v) or k[0] for k in keys}


def level_label(rank: str, summary: dict[str, Any]) -> str:
    """A rank as shown; the label column's own classes name their column."""
    if rank == "label":
        return f"label ({summary['label_col']})" if summary.get("label_col") else "label"
    return rank


def num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
