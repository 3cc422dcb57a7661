"""Metrics: Wilson intervals, per-rank tallies, balanced accuracy, mistake severity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biotrove_cli.core.evaluation.metrics import (
    RankTally,
    SeverityTally,
    balanced_interval,
    wilson_interval,
)
from biotrove_cli.core.taxonomy.rank import RANKS, Rank


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    lo, hi = wilson_interval(15, 148)
    assert lo == pytest.approx(0.0624, abs=5e-5) and hi == pytest.approx(0.1605, abs=5e-5)
    # the edges stay inside [0, 1] and do not collapse (0/10 -> 0-0.2775)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=5e-5)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=5e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_balanced_interval_is_the_mean_recall_and_brackets_it():
    correct = np.array([9, 1, 0, 5])
    support = np.array([10, 10, 0, 5])  # class 2 is absent: not averaged
    value, lo, hi = balanced_interval(correct, support)
    assert value == pytest.approx((0.9 + 0.1 + 1.0) / 3)
    assert 0.0 <= lo < value < hi <= 1.0
    assert all(math.isnan(v) for v in balanced_interval(np.zeros(3), np.zeros(3)))


def _reference(truth, topk, n_classes):
    """Plain-Python metrics for a list of (truth, [predictions])."""
    n = len(truth)
    top1 = sum(t == p[0] for t, p in zip(truth, topk, strict=True)) / n
    top5 = sum(t in p[:5] for t, p in zip(truth, topk, strict=True)) / n
    recalls = []
    for c in range(n_classes):
        rows = [p for t, p in zip(truth, topk, strict=True) if t == c]
        if rows:
            recalls.append(sum(p[0] == c for p in rows) / len(rows))
    return top1, top5, sum(recalls) / len(recalls)


def test_rank_tally_agrees_with_a_plain_python_count_and_merges_by_addition():
    rng = np.random.default_rng(0)
    n_classes = 12
    truth = rng.integers(0, n_classes, size=300)
    topk = np.stack([rng.permutation(n_classes)[:5] for _ in truth])
    # make a third of the rows right at top-1
    topk[::3, 0] = truth[::3]
    whole = RankTally(Rank.GENUS, n_classes, track_confusion=True)
    whole.update(truth, topk)
    parts = RankTally(Rank.GENUS, n_classes, track_confusion=True)
    for lo in range(0, 300, 64):
        piece = RankTally(Rank.GENUS, n_classes, track_confusion=True)
        piece.update(truth[lo : lo + 64], topk[lo : lo + 64])
        parts += piece
    ref_top1, ref_top5, ref_bal = _reference(truth.tolist(), topk.tolist(), n_classes)
    for t in (whole, parts):
        m = t.metrics()
        assert m["n_images"] == 300
        assert m["top1"] == pytest.approx(ref_top1)
        assert m["top5"] == pytest.approx(ref_top5)
        assert m["balanced_accuracy"] == pytest.approx(ref_bal)
        assert m["top1_ci_low"] < m["top1"] < m["top1_ci_high"]
        assert m["n_classes_present"] == len(set(truth.tolist()))
    assert whole.confusion == parts.confusion
    cells = whole.confusion_pairs()
    assert sum(n for _, _, n in cells) == 300
    assert sum(n for t, p, n in cells if t == p) == whole.metrics()["n_correct_top1"]
    per_class = {r["index"]: r for r in whole.per_class()}
    for c in range(n_classes):
        rows = [p for t, p in zip(truth.tolist(), topk.tolist(), strict=True) if t == c]
        assert per_class[c]["support"] == len(rows)
        assert per_class[c]["predicted"] == int((topk[:, 0] == c).sum())


def test_rank_tally_counts_excluded_rows_separately():
    t = RankTally(Rank.SPECIES, 3)
    t.skip(blank=2, not_in_bank=["Quercus robur", "Quercus robur", "Pica pica"])
    t.update(np.array([0, 1]), np.array([[0, 1, 2], [2, 1, 0]]))
    m = t.metrics()
    assert (m["n_images"], m["n_blank"], m["n_not_in_bank"]) == (2, 2, 3)
    assert m["top1"] == 0.5
    assert t.not_in_bank_examples == ["Quercus robur", "Pica pica"]
    with pytest.raises(ValueError):
        t += RankTally(Rank.GENUS, 3)


def test_severity_counts_the_deepest_shared_rank(demo_bank):
    taxa = demo_bank.taxa
    index = {t.binomial: i for i, t in enumerate(taxa)}
    maps = {r: np.asarray(demo_bank.classes(r).species_to_class) for r in RANKS}
    pairs = [  # (truth, predicted, deepest shared rank)
        ("Vespula vulgaris", "Vespula alascensis", "genus"),
        ("Vespula vulgaris", "Bombus auricomus", "order"),  # both Hymenoptera
        ("Sturnus vulgaris", "Vespula vulgaris", "kingdom"),  # same epithet, other phylum
        ("Artemisia vulgaris", "Sturnus vulgaris", "none"),  # other kingdom
        ("Quercus alba", "Quercus alba", None),  # right: not a mistake
    ]
    sev = SeverityTally()
    sev.update(
        np.array([index[p] for _, p, _ in pairs]), np.array([index[t] for t, _, _ in pairs]), maps
    )
    m = sev.metrics()
    assert m["mistakes"] == 4
    for _, _, deepest in pairs[:4]:
        assert m[f"mistakes_deepest_{deepest}"] == 1
    # shared ranks: genus 6, order 4, kingdom 1, none 0
    assert m["mistake_shared_ranks_mean"] == pytest.approx((6 + 4 + 1 + 0) / 4)
