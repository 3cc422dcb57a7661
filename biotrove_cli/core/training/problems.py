"""Shards that failed or ended early during training: the tally (carried by checkpoints, summed
over ranks for ``metrics.jsonl`` and the summary), the warnings, and ``data.strict``.

The data streams (:mod:`biotrove_cli.core.training.data`) hand each problem over with the next
batch; the Trainer calls :func:`note_problems` for every batch, on every rank.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

from biotrove_cli.core.data.shards import ShardProblem
from biotrove_cli.core.distributed.env import any_rank, sum_ranks
from biotrove_cli.core.errors import TrainingError

log = logging.getLogger("biotrove")


@dataclass
class DataTally:
    """Shards skipped (unreadable) or truncated (ended early), and the samples lost with them."""

    skipped_shards: int = 0
    truncated_shards: int = 0
    lost_samples: int = 0

    def add(self, problem: ShardProblem) -> None:
        if problem.kind == "failed":
            self.skipped_shards += 1
        else:
            self.truncated_shards += 1
        self.lost_samples += problem.lost or 0

    def as_list(self) -> list[int]:
        return [getattr(self, f.name) for f in fields(self)]

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_values(cls, values: Any) -> DataTally:
        """From :meth:`as_list` or :meth:`as_dict` (a checkpoint's), tolerating old ones."""
        if isinstance(values, dict):
            return cls(**{f.name: int(values.get(f.name, 0)) for f in fields(cls)})
        return cls(*(int(v) for v in values)) if values else cls()


def note_problems(batch: dict[str, Any], tally: DataTally, strict: bool, device: str) -> None:
    """Warn about and count the shards this batch's stream found unreadable or short; under
    ``strict`` stop (on every rank: a collective). A data worker's own error is raised here."""
    if "fatal" in batch:
        message, hint = batch["fatal"]
        raise TrainingError(message, hint=hint)
    problems = batch.get("shard_problems") or ()
    for problem in problems:
        log.warning("%s", problem.message())
        tally.add(problem)
    if strict and any_rank(bool(problems), device):
        raise TrainingError(
            problems[0].message() if problems else "a shard failed on another rank",
            hint="fix or re-create the shard, or drop --strict (data.strict) to count such "
            "shards and go on; the last checkpoint is kept",
        )


def all_ranks(tally: DataTally, device: str) -> dict[str, int]:
    """Every rank's tally summed (a collective: every rank calls it)."""
    return DataTally.from_values(sum_ranks(tally.as_list(), device)).as_dict()
