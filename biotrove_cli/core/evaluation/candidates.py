"""Candidate-set accuracy (BioTrove's Confounding-Species benchmark): every photo is scored only
against its own candidate names, and top-1 is whether its true name scores highest among them.

Reported per group (``--group-by``) and overall, as the micro average (over photos) and the
macro average (over groups), each with a 95% interval and the chance level beside it:

* a group's top-1 and the micro average: the Wilson score interval;
* the macro average: the mean of the groups' top-1, with the normal interval of
  :func:`metrics.balanced_interval` (groups in place of classes);
* chance: the mean of ``1/k`` over the scored photos (``k`` = the photo's candidates); its
  macro form is the mean of the groups' chance levels.

Photos whose true name is none of their candidates, that have no true name, or that have no
candidates are left out of every figure and counted (with examples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biotrove_cli.core.evaluation.metrics import balanced_interval, wilson_interval
from biotrove_cli.core.evaluation.tables import BLANK, MISSING

MAX_EXAMPLES = 5


@dataclass
class CandidateTally:
    """Counts per group; merge tallies with ``+=``."""

    groups: list[str]
    n: np.ndarray = field(default=None)  # type: ignore[assignment]  # photos scored
    correct: np.ndarray = field(default=None)  # type: ignore[assignment]
    inv_k: np.ndarray = field(default=None)  # type: ignore[assignment]  # sum of 1/k
    not_in_candidates: np.ndarray = field(default=None)  # type: ignore[assignment]
    not_in_candidates_examples: list[str] = field(default_factory=list)
    n_blank: int = 0  # no true name
    n_no_candidates: int = 0

    def __post_init__(self) -> None:
        g = len(self.groups)
        for name, dtype in (
            ("n", np.int64),
            ("correct", np.int64),
            ("inv_k", np.float64),
            ("not_in_candidates", np.int64),
        ):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(g, dtype=dtype))

    def update(
        self,
        logits: Any,
        truth: np.ndarray,
        options: list[tuple[int, ...]],
        groups: np.ndarray,
        labels: list[str],
        names: list[str],
    ) -> None:
        """Score a batch.

        Args:
            logits: [B, C] image-text similarities over every candidate class.
            truth: [B] each photo's true class, BLANK (no name) or MISSING (not a candidate).
            options: each photo's candidate classes.
            groups: [B] each photo's group.
            labels, names: each photo's true name and the classes' names (for examples).
        """
        from biotrove_cli.core.evaluation.arrays import masked_argmax

        keep = []
        for i, opts in enumerate(options):
            if not opts:
                self.n_no_candidates += 1
            elif truth[i] == BLANK:
                self.n_blank += 1
            elif truth[i] == MISSING:
                self.not_in_candidates[groups[i]] += 1
                ex = f"{labels[i]!r} not in {' / '.join(names[j] for j in opts)}"
                if (
                    ex not in self.not_in_candidates_examples
                    and len(self.not_in_candidates_examples) < MAX_EXAMPLES
                ):
                    self.not_in_candidates_examples.append(ex)
            else:
                keep.append(i)
        if not keep:
            return
        pred = masked_argmax(logits, keep, [list(options[i]) for i in keep])
        kept = np.asarray(keep)
        hit = pred == truth[kept]
        g = groups[kept]
        np.add.at(self.n, g, 1)
        np.add.at(self.correct, g[hit], 1)
        np.add.at(self.inv_k, g, [1.0 / len(options[i]) for i in keep])

    def __iadd__(self, other: CandidateTally) -> CandidateTally:
        if other.groups != self.groups:
            raise ValueError("cannot merge candidate tallies of different groups")
        self.n += other.n
        self.correct += other.correct
        self.inv_k += other.inv_k
        self.not_in_candidates += other.not_in_candidates
        for ex in other.not_in_candidates_examples:
            if (
                ex not in self.not_in_candidates_examples
                and len(self.not_in_candidates_examples) < MAX_EXAMPLES
            ):
                self.not_in_candidates_examples.append(ex)
        self.n_blank += other.n_blank
        self.n_no_candidates += other.n_no_candidates
        return self

    @property
    def n_images(self) -> int:
        return int(self.n.sum())

    def _row(self, k: int, n: int, inv_k: float, n_missing: int) -> dict[str, Any]:
        lo, hi = wilson_interval(k, n)
        return {
            "top1": k / n if n else math.nan,
            "top1_ci_low": lo,
            "top1_ci_high": hi,
            "chance": inv_k / n if n else math.nan,
            "n_images": n,
            "n_correct_top1": k,
            "n_not_in_candidates": n_missing,
        }

    def metrics(self) -> list[dict[str, Any]]:
        """One row per group (``scope`` group), then ``macro`` (with several groups) and
        ``micro``: top-1 with its 95% interval, chance, photos scored and left out."""
        rows = []
        for g, name in enumerate(self.groups):
            row = self._row(
                int(self.correct[g]),
                int(self.n[g]),
                float(self.inv_k[g]),
                int(self.not_in_candidates[g]),
            )
            rows.append({"scope": "group", "group": name, **row})
        scored = self.n > 0
        if len(self.groups) > 1:
            value, lo, hi = balanced_interval(self.correct, self.n)
            chance = float(np.mean(self.inv_k[scored] / self.n[scored])) if scored.any() else None
            rows.append(
                {
                    "scope": "macro",
                    "group": "",
                    "top1": value,
                    "top1_ci_low": lo,
                    "top1_ci_high": hi,
                    "chance": math.nan if chance is None else chance,
                    "n_images": self.n_images,
                    "n_correct_top1": int(self.correct.sum()),
                    "n_not_in_candidates": int(self.not_in_candidates.sum()),
                }
            )
        micro = self._row(
            int(self.correct.sum()),
            self.n_images,
            float(self.inv_k.sum()),
            int(self.not_in_candidates.sum()),
        )
        rows.append({"scope": "micro", "group": "", **micro})
        return rows
