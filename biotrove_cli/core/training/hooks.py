"""What a training run reports: progress hooks (rank 0), the validator's shape, the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``validate(model, step) -> flat metrics`` (rank 0, between steps).
Validator = Callable[[Any, int], dict[str, Any]]


@dataclass
class TrainResult:
    """How a run ended (the Trainer fills it in as it goes)."""

    run_dir: Path
    steps: int = 0
    epochs_done: int = 0
    samples: int = 0
    seconds: float = 0.0
    first_loss: float | None = None
    last_loss: float | None = None
    skipped_nonfinite: int = 0  # batches skipped: a non-finite loss, or no decodable image
    bad_samples: int = 0
    data_problems: dict[str, int] = field(default_factory=dict)  # skipped/truncated shards, lost
    last_checkpoint: Path | None = None
    last_eval: dict[str, Any] = field(default_factory=dict)
    resumed_from: Path | None = None


class Callbacks:
    """Hooks for progress and logging (rank 0 only). The CLI passes a Rich implementation."""

    def on_launch(self, info: dict[str, Any]) -> None:
        """The launching process is about to start torchrun workers (not called in them)."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_step(self, metrics: dict[str, Any]) -> None: ...

    def on_eval(self, metrics: dict[str, Any]) -> None: ...

    def on_checkpoint(self, path: Path) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...
