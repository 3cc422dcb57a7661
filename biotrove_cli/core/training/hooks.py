"""What a training run reports: progress hooks, the validator's shape, the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    """Hooks for progress and logging; the CLI passes a Rich implementation.

    They are called on rank 0 only, unless ``every_rank`` is set: then on every rank at the
    same points, which is what a hook that synchronises the ranks needs (Ray Train's
    ``ray.train.report`` must be called by every worker the same number of times). Only rank
    0 validates, so off rank 0 an evaluation record holds just its kind, step and epoch.
    """

    every_rank = False

    def on_launch(self, info: dict[str, Any]) -> None:
        """The launching process is about to start torchrun workers (not called in them)."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_step(self, metrics: dict[str, Any]) -> None: ...

    def on_eval(self, metrics: dict[str, Any]) -> None: ...

    def on_checkpoint(self, path: Path) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


class CallbackList(Callbacks):
    """Several callbacks as one, in order; :meth:`for_rank` keeps those a rank calls."""

    def __init__(self, callbacks: Callbacks | Sequence[Callbacks] | None = None):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callbacks):
            callbacks = [callbacks]
        self.callbacks: list[Callbacks] = []
        for cb in callbacks:
            self.callbacks += cb.callbacks if isinstance(cb, CallbackList) else [cb]

    def for_rank(self, is_main: bool) -> CallbackList:
        return CallbackList([cb for cb in self.callbacks if is_main or cb.every_rank])

    def on_launch(self, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_launch(info)

    def on_start(self, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_start(info)

    def on_step(self, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step(metrics)

    def on_eval(self, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_eval(metrics)

    def on_checkpoint(self, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(path)

    def on_end(self, result: TrainResult) -> None:
        for cb in self.callbacks:
            cb.on_end(result)
