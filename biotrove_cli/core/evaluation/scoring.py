"""How ``biotrove eval`` scores a model: one pass over this process's share of the images,
every requested rank and mode scored from the same features, and the tallies of all processes
summed on rank 0.

This module imports torch at import time; the CLI imports it inside the command body.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset, eval_loader, share, trim
from biotrove_cli.core.evaluation.metrics import TOPK, RankTally, SeverityTally
from biotrove_cli.core.evaluation.zeroshot import (
    ImageEncoder,
    Mode,
    TextSettings,
    ZeroShotClassifier,
    build_classifier,
)
from biotrove_cli.core.runtime import cpu_threads, resolve_workers
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

BLANK = -2  # truth index: the rank is blank for this row
MISSING = -1  # truth index: the bank has no such taxon


@dataclass
class ModelTally:
    """Everything counted for one model over the data."""

    spec: str
    label: str
    tallies: dict[tuple[Mode, Rank], RankTally] = field(default_factory=dict)
    severity: dict[Mode, SeverityTally] = field(default_factory=dict)
    unreadable: Counter = field(default_factory=Counter)
    unreadable_examples: list[str] = field(default_factory=list)
    shard_problems: list[dict[str, Any]] = field(default_factory=list)  # ShardProblem.to_dict()
    n_seen: int = 0
    species_nll: float = 0.0  # summed -log p(true species) of the first mode (training's val loss)
    species_nll_n: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_config(
        cls, spec: str, label: str, n_classes: dict[Rank, int], cfg: EvalConfig
    ) -> ModelTally:
        """Empty tallies for every mode and rank of ``cfg`` (the confusion where it asks)."""
        tally = cls(spec=spec, label=label)
        for mode in cfg.modes:
            for r in cfg.ranks:
                tally.tallies[(mode, r)] = RankTally(
                    r,
                    n_classes[r],
                    track_confusion=cfg.confusion is not None and cfg.confusion[0] is r,
                )
            tally.severity[mode] = SeverityTally()
        return tally

    def add_unreadable(self, key: str, reason: str) -> None:
        """Count an image that could not be scored (the first few are kept as examples)."""
        self.unreadable[reason] += 1
        if len(self.unreadable_examples) < 5:
            self.unreadable_examples.append(f"{key} ({reason})")

    def merge(self, other: ModelTally) -> None:
        """Add another process's counts for the same model (see :func:`gather`)."""
        for k, t in other.tallies.items():
            self.tallies[k] += t
        for m, s in other.severity.items():
            self.severity[m] += s
        self.unreadable.update(other.unreadable)
        for e in other.unreadable_examples:
            if len(self.unreadable_examples) < 5:
                self.unreadable_examples.append(e)
        self.shard_problems.extend(other.shard_problems)
        self.n_seen += other.n_seen
        self.species_nll += other.species_nll
        self.species_nll_n += other.species_nll_n

    @property
    def lost_samples(self) -> int:
        """Samples the shards that failed or ended early did not give (sizes.json's count)."""
        return sum(p.get("lost") or 0 for p in self.shard_problems)


class TruthIndex:
    """Maps a sample's taxon to its class index at each rank (memoised per taxon)."""

    def __init__(self, bank: LabelBank, ranks: Sequence[Rank]):
        self.bank = bank
        self.ranks = list(ranks)
        self._memo: dict[Taxon, tuple[int, ...]] = {}

    def __call__(self, taxon: Taxon) -> tuple[int, ...]:
        got = self._memo.get(taxon)
        if got is None:
            got = tuple((self.bank.match(taxon, r) if taxon.has(r) else BLANK) for r in self.ranks)
            self._memo[taxon] = got
        return got


def _score_batch(
    clf: ZeroShotClassifier,
    feats: Any,
    truth: Any,
    taxa: list[Taxon],
    ranks: list[Rank],
    modes: list[Mode],
    tally: ModelTally,
    s2c: dict[Rank, Any],
) -> None:
    import numpy as np

    species_probs = clf.species_probs(feats) if clf.species_weights is not None else None
    for mode in modes:
        for j, rank in enumerate(ranks):
            t = tally.tallies[(mode, rank)]
            col = truth[:, j]
            blank = int((col == BLANK).sum())
            missing = np.flatnonzero(col == MISSING)
            if blank or len(missing):
                t.skip(blank, [taxa[i].name_at(rank) for i in missing.tolist()])
            keep = np.flatnonzero(col >= 0)
            if len(keep) == 0:
                continue
            probs = clf.probs(feats, rank, mode, species_probs)
            k = min(TOPK, probs.shape[1])
            top = probs.topk(k, dim=1).indices.cpu().numpy()
            t.update(col[keep], top[keep])
            if rank is Rank.SPECIES:
                tally.severity[mode].update(top[keep, 0], col[keep], s2c)
                if mode is modes[0]:
                    tally.species_nll += _nll(probs, keep, col[keep])
                    tally.species_nll_n += len(keep)


def _nll(probs: Any, rows: Any, truth: Any) -> float:
    """Summed -log p of the true classes (the rows with a truth)."""
    import torch

    rows_t = torch.as_tensor(rows, device=probs.device)
    truth_t = torch.as_tensor(truth, device=probs.device)
    return -float(probs[rows_t, truth_t].float().clamp_min(1e-12).log().sum())


def evaluate_model(
    spec: str,
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    label: str | None = None,
) -> ModelTally:
    """Load one model and score it (see :func:`score_model`)."""
    from biotrove_cli.core.models.load import load_model

    t0 = time.perf_counter()
    loaded = load_model(spec, arch=cfg.arch, device=cfg.device)
    t_load = time.perf_counter() - t0
    tally = score_model(loaded, ds, cfg, progress, rank, world, label=label or spec)
    tally.spec = spec
    tally.timings = {"load_s": round(t_load, 3), **tally.timings}
    return tally


def score_model(
    loaded: Any,
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    label: str = "model",
) -> ModelTally:
    """One model, one pass over this process's share of the images, all ranks and modes.

    ``loaded`` is a :class:`LoadedModel` (or anything with ``model``, ``preprocess``,
    ``tokenizer``, ``image_size``, ``device``, ``text_fingerprint()`` and ``describe()``), so
    training can score its live model; ``progress(n)`` gets the samples each batch consumed.
    """
    import numpy as np

    text = TextSettings.from_spec(cfg.text_type, cfg.templates)
    clf = build_classifier(
        loaded, ds.bank, ranks=cfg.ranks, modes=cfg.modes, text=text, use_cache=cfg.use_cache
    )
    encoder = ImageEncoder(loaded, cfg.precision)
    ranks, modes = list(cfg.ranks), list(cfg.modes)
    tally = ModelTally.for_config(getattr(loaded, "spec", label), label, clf.n_classes, cfg)
    s2c = {r: np.asarray(ds.bank.classes(r).species_to_class, dtype=np.int64) for r in RANKS}
    truth_of = TruthIndex(ds.bank, ranks)
    workers = resolve_workers(cfg.workers, encoder.device, encoder.params)
    loader = eval_loader(
        ds,
        loaded.preprocess,
        loaded.image_size,
        cfg.batch_size,
        workers,
        rank,
        world,
        cfg.limit,
        pin_memory=encoder.cuda,
    )
    per_rank_limit = None if cfg.limit is None else share(cfg.limit, rank, world)
    t1 = time.perf_counter()
    done = 0
    with cpu_threads(workers, encoder.device):
        for batch in loader:
            if per_rank_limit is not None:
                batch = trim(batch, per_rank_limit - done)
            done += batch["n"]
            _note_shard_problems(batch.get("shard_problems", ()), tally, cfg.strict)
            for key, reason in batch["bad"]:
                tally.add_unreadable(key, reason)
            if batch["images"] is not None:
                feats = encoder(batch["images"])
                truth = np.asarray([truth_of(t) for t in batch["taxa"]], dtype=np.int64)
                truth = truth.reshape(len(batch["taxa"]), len(ranks))
                _score_batch(clf, feats, truth, batch["taxa"], ranks, modes, tally, s2c)
            if progress is not None:
                progress(batch["n"])
            if per_rank_limit is not None and done >= per_rank_limit:
                break
    t_images = time.perf_counter() - t1
    tally.n_seen = done
    n_ok = done - sum(tally.unreadable.values())
    tally.info = {
        **loaded.describe(),
        "precision": encoder.precision,
        "workers": workers,
        "logit_scale": clf.logit_scale,
        "text_cache": clf.cache,
    }
    tally.timings = {
        "text_s": round(clf.text_seconds, 3),
        "images_s": round(t_images, 3),
        "images_per_s": round(n_ok / t_images, 2) if t_images > 0 else None,
    }
    return tally


def _note_shard_problems(problems: Sequence[Any], tally: ModelTally, strict: bool) -> None:
    """Count the shards that failed or ended early (an error under ``--strict``)."""
    from biotrove_cli.core.errors import InputError

    for problem in problems:
        if strict:
            raise InputError(
                problem.message(),
                hint="fix or re-create the shard, or drop --strict to count such shards and "
                "score the rest",
            )
        tally.shard_problems.append(problem.to_dict())


def gather(tally: ModelTally, world: int) -> ModelTally | None:
    """Sum every process's tallies on rank 0 (others get None)."""
    import torch.distributed as dist

    got: list[Any] = [None] * world if dist.get_rank() == 0 else []
    dist.gather_object(tally, got if dist.get_rank() == 0 else None, dst=0)
    if dist.get_rank() != 0:
        return None
    total = got[0]
    for other in got[1:]:
        total.merge(other)
    total.timings["images_per_s"] = (
        round((total.n_seen - sum(total.unreadable.values())) / total.timings["images_s"], 2)
        if total.timings.get("images_s")
        else None
    )
    return total
