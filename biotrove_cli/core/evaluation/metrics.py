"""Zero-shot metrics per taxonomic rank, with 95% confidence intervals and mistake severity.

A :class:`RankTally` accumulates, for one (model, mode, rank), per-class counts that every metric
derives from: images per true class (support), top-1 and top-5 hits per true class, and top-1
predictions per class. Tallies are plain numpy arrays so they merge by addition (batches,
DataLoader workers, distributed ranks).

Confidence intervals:

* top-1 and top-5 accuracy: the Wilson score interval for a binomial proportion (95%), which
  stays inside [0, 1] and behaves at 0% and 100% where the normal interval collapses;
* balanced accuracy (the mean per-class recall over the classes present): a normal interval with
  the delta-method variance ``sum_c p_c (1 - p_c) / n_c / C^2``, each class's recall smoothed as
  ``(k + 1) / (n + 2)`` for the variance only, clipped to [0, 1].

Mistake severity: for each wrong species prediction, the deepest rank at which the predicted
species and the true species still share a taxon (genus = a congeneric mistake; none = not even
the kingdom). Reported as a distribution and as the mean number of shared ranks (0..6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biotrove_cli.core.taxonomy.rank import RANKS, Rank

Z95 = 1.959963984540054
CI_METHOD = {
    "top1": "wilson",
    "top5": "wilson",
    "balanced_accuracy": "normal (delta method over per-class binomial variances)",
}
TOPK = 5
#: severity buckets: index 0 = no shared rank, 1..6 = deepest shared rank kingdom..genus
SEVERITY_RANKS: tuple[Rank, ...] = RANKS[:-1]
SEVERITY_KEYS: tuple[str, ...] = ("none", *(r.value for r in SEVERITY_RANKS))
MAX_EXAMPLES = 5


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) when n = 0."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # the bounds are exactly 0 and 1 at the edges (rounding would leave 1e-16 off)
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return (lo, hi)


def balanced_interval(
    correct: np.ndarray, support: np.ndarray, z: float = Z95
) -> tuple[float, float, float]:
    """(balanced accuracy, low, high) over the classes with support; nan when none."""
    mask = support > 0
    c = int(mask.sum())
    if c == 0:
        return (math.nan, math.nan, math.nan)
    k = correct[mask].astype(np.float64)
    n = support[mask].astype(np.float64)
    value = float(np.mean(k / n))
    smooth = (k + 1.0) / (n + 2.0)
    var = float(np.sum(smooth * (1.0 - smooth) / n)) / (c * c)
    half = z * math.sqrt(var)
    return (value, max(0.0, value - half), min(1.0, value + half))


@dataclass
class RankTally:
    """Counts for one (model, mode, rank); merge tallies with ``+=``."""

    rank: Rank | str  # a rank, or "label" (the label column's own classes)
    n_classes: int
    track_confusion: bool = False
    support: np.ndarray = field(default=None)  # type: ignore[assignment]
    correct1: np.ndarray = field(default=None)  # type: ignore[assignment]
    correct5: np.ndarray = field(default=None)  # type: ignore[assignment]
    predicted: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_blank: int = 0
    n_not_in_bank: int = 0
    not_in_bank_examples: list[str] = field(default_factory=list)
    confusion: dict[int, int] = field(default_factory=dict)  # truth * C + predicted -> count

    def __post_init__(self) -> None:
        for name in ("support", "correct1", "correct5", "predicted"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n_classes, dtype=np.int64))

    @property
    def n_images(self) -> int:
        return int(self.support.sum())

    def update(self, truth: np.ndarray, topk: np.ndarray) -> None:
        """Count a batch: ``truth`` [B] class indices (all >= 0), ``topk`` [B, k] predictions."""
        if len(truth) == 0:
            return
        truth = np.asarray(truth, dtype=np.int64)
        topk = np.asarray(topk, dtype=np.int64).reshape(len(truth), -1)
        top1 = topk[:, 0]
        hit1 = top1 == truth
        hit5 = (topk[:, :TOPK] == truth[:, None]).any(axis=1)
        np.add.at(self.support, truth, 1)
        np.add.at(self.correct1, truth[hit1], 1)
        np.add.at(self.correct5, truth[hit5], 1)
        np.add.at(self.predicted, top1, 1)
        if self.track_confusion:
            codes, counts = np.unique(truth * self.n_classes + top1, return_counts=True)
            for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                self.confusion[code] = self.confusion.get(code, 0) + count

    def skip(self, blank: int = 0, not_in_bank: list[str] | None = None) -> None:
        """Count rows excluded from this rank: truth blank, or truth not in the label bank."""
        self.n_blank += blank
        for name in not_in_bank or ():
            self.n_not_in_bank += 1
            if (
                name not in self.not_in_bank_examples
                and len(self.not_in_bank_examples) < MAX_EXAMPLES
            ):
                self.not_in_bank_examples.append(name)

    def __iadd__(self, other: RankTally) -> RankTally:
        if other.rank != self.rank or other.n_classes != self.n_classes:
            raise ValueError("cannot merge tallies of different ranks or label banks")
        self.support += other.support
        self.correct1 += other.correct1
        self.correct5 += other.correct5
        self.predicted += other.predicted
        self.n_blank += other.n_blank
        self.n_not_in_bank += other.n_not_in_bank
        for name in other.not_in_bank_examples:
            if (
                name not in self.not_in_bank_examples
                and len(self.not_in_bank_examples) < MAX_EXAMPLES
            ):
                self.not_in_bank_examples.append(name)
        for code, count in other.confusion.items():
            self.confusion[code] = self.confusion.get(code, 0) + count
        return self

    def metrics(self) -> dict[str, Any]:
        """Accuracy figures with 95% intervals, class and image counts (stable snake_case)."""
        n = self.n_images
        k1 = int(self.correct1.sum())
        k5 = int(self.correct5.sum())
        lo1, hi1 = wilson_interval(k1, n)
        lo5, hi5 = wilson_interval(k5, n)
        bal, blo, bhi = balanced_interval(self.correct1, self.support)
        return {
            "top1": k1 / n if n else math.nan,
            "top1_ci_low": lo1,
            "top1_ci_high": hi1,
            "top5": k5 / n if n else math.nan,
            "top5_ci_low": lo5,
            "top5_ci_high": hi5,
            "balanced_accuracy": bal,
            "balanced_accuracy_ci_low": blo,
            "balanced_accuracy_ci_high": bhi,
            "chance": 1.0 / self.n_classes if self.n_classes else math.nan,
            "n_classes": self.n_classes,
            "n_classes_present": int((self.support > 0).sum()),
            "n_images": n,
            "n_correct_top1": k1,
            "n_correct_top5": k5,
            "n_blank": self.n_blank,
            "n_not_in_bank": self.n_not_in_bank,
        }

    def per_class(self) -> list[dict[str, Any]]:
        """Per-class rows (classes with images or predictions): support, recall, precision."""
        rows = []
        for c in np.flatnonzero((self.support > 0) | (self.predicted > 0)).tolist():
            n, k1, k5, p = (
                int(self.support[c]),
                int(self.correct1[c]),
                int(self.correct5[c]),
                int(self.predicted[c]),
            )
            rows.append(
                {
                    "index": c,
                    "support": n,
                    "correct_top1": k1,
                    "recall_top1": k1 / n if n else math.nan,
                    "correct_top5": k5,
                    "recall_top5": k5 / n if n else math.nan,
                    "predicted": p,
                    "precision": k1 / p if p else math.nan,
                }
            )
        return rows

    def confusion_pairs(self) -> list[tuple[int, int, int]]:
        """(truth, predicted, count) for every non-zero cell, by truth then count descending."""
        c = self.n_classes
        pairs = [(code // c, code % c, n) for code, n in self.confusion.items()]
        return sorted(pairs, key=lambda t: (t[0], -t[2], t[1]))


@dataclass
class SeverityTally:
    """Deepest shared rank of each wrong species prediction.

    ``counts[0]``: no shared rank; ``counts[1..6]``: deepest shared rank kingdom..genus.
    """

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(SEVERITY_KEYS), np.int64))

    def update(
        self, predicted: np.ndarray, truth: np.ndarray, species_to_class: dict[Rank, np.ndarray]
    ) -> None:
        """Count the wrong predictions among species indices ``predicted`` vs ``truth`` (>= 0).

        ``species_to_class[rank]`` maps a bank species to its class index at ``rank`` (-1 when
        the species has no name there). Class keys are lineage paths, so sharing a class at a
        rank implies sharing every rank above it.
        """
        predicted = np.asarray(predicted, dtype=np.int64)
        truth = np.asarray(truth, dtype=np.int64)
        wrong = predicted != truth
        if not wrong.any():
            return
        p, t = predicted[wrong], truth[wrong]
        depth = np.zeros(len(p), dtype=np.int64)
        for i, rank in enumerate(SEVERITY_RANKS, start=1):
            m = species_to_class[rank]
            same = (m[p] == m[t]) & (m[t] >= 0)
            depth[same] = i
        np.add.at(self.counts, depth, 1)

    def __iadd__(self, other: SeverityTally) -> SeverityTally:
        self.counts += other.counts
        return self

    def metrics(self) -> dict[str, Any]:
        n = int(self.counts.sum())
        out: dict[str, Any] = {"mistakes": n}
        out["mistake_shared_ranks_mean"] = (
            float(np.dot(self.counts, np.arange(len(self.counts)))) / n if n else math.nan
        )
        for key, count in zip(SEVERITY_KEYS, self.counts.tolist(), strict=True):
            out[f"mistakes_deepest_{key}"] = int(count)
        return out
