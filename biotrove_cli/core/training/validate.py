"""Periodic zero-shot evaluation during training (rank 0), through the eval engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def make_validator(cfg: Any, device: str) -> Callable[[Any, int], dict[str, Any]] | None:
    """A function (model, step) -> metrics, or None when no validation data is configured."""
    if not cfg.data.val:
        return None
    raise NotImplementedError("wired to the eval engine once it lands")
