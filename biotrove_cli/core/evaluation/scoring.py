"""How ``biotrove eval`` scores a model: one pass over this process's share of the images,
every requested rank and mode scored from the same features, and the tallies of all processes
summed on rank 0.

This module imports torch at import time; the CLI imports it inside the command body.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from biotrove_cli.core.evaluation import arrays
from biotrove_cli.core.evaluation.candidates import CandidateTally
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import Dataset, eval_loader, share, trim
from biotrove_cli.core.evaluation.metrics import TOPK, RankTally, SeverityTally
from biotrove_cli.core.evaluation.tables import BLANK, MISSING
from biotrove_cli.core.evaluation.zeroshot import (
    Mode,
    TextSettings,
    ZeroShotClassifier,
    build_classifier,
    make_image_encoder,
)
from biotrove_cli.core.runtime import cpu_threads, resolve_workers
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

LABEL = "label"  # the level of a label column's own classes


@dataclass
class ModelTally:
    """Everything counted for one model (and one text type) over the data."""

    spec: str
    label: str
    text_type: str = ""
    tallies: dict[tuple[Mode, Rank], RankTally] = field(default_factory=dict)
    severity: dict[Mode, SeverityTally] = field(default_factory=dict)
    label_tally: RankTally | None = None  # the label column's own classes (``--label-col``)
    candidates: CandidateTally | None = None  # candidate-set accuracy (``--candidates``)
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
        cls,
        spec: str,
        label: str,
        n_classes: dict[Rank, int],
        cfg: EvalConfig,
        ds: Dataset | None = None,
        text_type: str = "",
    ) -> ModelTally:
        """Empty tallies for every mode and rank of ``cfg`` (the confusion where it asks), and
        for the data's label level or candidate sets."""
        tally = cls(spec=spec, label=label, text_type=text_type or cfg.text_types[0])
        for mode in cfg.modes:
            for r in cfg.ranks or ():
                tally.tallies[(mode, r)] = RankTally(
                    r,
                    n_classes[r],
                    track_confusion=cfg.confusion is not None and cfg.confusion[0] is r,
                )
            tally.severity[mode] = SeverityTally()
        if ds is not None and ds.table is not None and ds.names is not None:
            if ds.candidates:
                tally.candidates = CandidateTally(groups=list(ds.table.groups))
            else:
                tally.label_tally = RankTally(LABEL, len(ds.names))
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
        if self.label_tally is not None and other.label_tally is not None:
            self.label_tally += other.label_tally
        if self.candidates is not None and other.candidates is not None:
            self.candidates += other.candidates
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

    @property
    def n_scored(self) -> int:
        """Images counted in any figure."""
        counts = [t.n_images for t in self.tallies.values()]
        if self.label_tally is not None:
            counts.append(self.label_tally.n_images)
        if self.candidates is not None:
            counts.append(self.candidates.n_images)
        return max(counts, default=0)


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
            top = arrays.topk_indices(probs, k)
            t.update(col[keep], top[keep])
            if rank is Rank.SPECIES:
                tally.severity[mode].update(top[keep, 0], col[keep], s2c)
                if mode is modes[0]:
                    tally.species_nll += _nll(probs, keep, col[keep])
                    tally.species_nll_n += len(keep)


def _nll(probs: Any, rows: Any, truth: Any) -> float:
    """Summed -log p of the true classes (the rows with a truth)."""
    return arrays.picked_nll(probs, rows, truth)


def evaluate_model(
    spec: str,
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    label: str | None = None,
) -> list[ModelTally]:
    """Load one model and score it, one tally per text type (see :func:`score_text_types`)."""
    from biotrove_cli.core.models.load import load_model

    t0 = time.perf_counter()
    loaded = load_model(spec, arch=cfg.arch, device=cfg.device)
    t_load = time.perf_counter() - t0
    tallies = score_text_types(loaded, ds, cfg, progress, rank, world, label=label or spec)
    for tally in tallies:
        tally.spec = spec
        tally.timings = {"load_s": round(t_load, 3), **tally.timings}
    return tallies


def score_model(
    loaded: Any,
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    label: str = "model",
) -> ModelTally:
    """The tally of the first text type of :func:`score_text_types` (training's validation)."""
    return score_text_types(loaded, ds, cfg, progress, rank, world, label)[0]


@dataclass
class _TypeScorer:
    """What one text type scores with: its rank classifier and its label/candidate weights."""

    clf: ZeroShotClassifier | None
    names: Any  # [C, D] unit rows of the label level's (or candidates') class texts, or None
    tally: ModelTally


def _scorers(loaded: Any, ds: Dataset, cfg: EvalConfig, label: str) -> list[_TypeScorer]:
    """Class texts encoded once per text type (a set of prompts two types share, once)."""
    from biotrove_cli.core.evaluation.templates import load_templates
    from biotrove_cli.core.evaluation.text import class_embeddings

    templates_name, templates = load_templates(cfg.templates)
    memo: dict[tuple, tuple[Any, bool]] = {}
    out = []
    for text_type in cfg.text_types:
        t0 = time.perf_counter()
        text = TextSettings(text_type, templates_name, templates)
        clf = None
        if cfg.ranks:
            clf = build_classifier(
                loaded,
                ds.bank,
                ranks=cfg.ranks,
                modes=cfg.modes,
                text=text,
                use_cache=cfg.use_cache,
                memo=memo,
            )
        weights = None
        if ds.names is not None:
            prompts = ds.names.prompts(text_type, templates)
            key = tuple(tuple(p) for p in prompts)
            if key not in memo:
                memo[key] = class_embeddings(loaded, prompts, use_cache=cfg.use_cache)
                names_hit = memo[key][1]
            else:
                names_hit = True  # encoded for an earlier text type
            weights = arrays.as_float(memo[key][0])
            if not arrays.is_numpy(weights):
                weights = weights.to(loaded.device)
        n_classes = clf.n_classes if clf is not None else {}
        tally = ModelTally.for_config(
            getattr(loaded, "spec", label), label, n_classes, cfg, ds, text_type
        )
        tally.timings["text_s"] = round(time.perf_counter() - t0, 3)
        tally.info["text_cache"] = dict(clf.cache) if clf is not None else {}
        if weights is not None:
            tally.info["text_cache"]["candidates" if ds.candidates else "label"] = names_hit
        tally.info["logit_scale"] = clf.logit_scale if clf is not None else None
        out.append(_TypeScorer(clf, weights, tally))
    return out


class _RowLabels:
    """The label level's truth, candidates and groups of table rows, by row index."""

    def __init__(self, ds: Dataset):
        import numpy as np

        self.truth = np.asarray([r.label_index for r in ds.rows], dtype=np.int64)
        self.groups = np.asarray([r.group for r in ds.rows], dtype=np.int64)
        self.options = [r.options for r in ds.rows]
        self.labels = [r.label for r in ds.rows]

    def score(self, sc: _TypeScorer, feats: Any, index: list[int], names: list[str]) -> None:
        import numpy as np

        idx = np.asarray(index, dtype=np.int64)
        logits = feats @ sc.names.T
        truth = self.truth[idx]
        if sc.tally.candidates is not None:
            options = [self.options[i] for i in index]
            labels = [self.labels[i] for i in index]
            sc.tally.candidates.update(logits, truth, options, self.groups[idx], labels, names)
            return
        t = sc.tally.label_tally
        assert t is not None
        t.skip(int((truth == BLANK).sum()))
        keep = np.flatnonzero(truth >= 0)
        if len(keep):
            top = arrays.topk_indices(logits, min(TOPK, logits.shape[1]))
            t.update(truth[keep], top[keep])


def score_text_types(
    loaded: Any,
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    label: str = "model",
) -> list[ModelTally]:
    """One model, one pass over this process's share of the images, every text type, rank and
    mode (and the label level or candidate sets) scored from the same image features.

    ``loaded`` is a :class:`LoadedModel` (or anything with ``model``, ``preprocess``,
    ``tokenizer``, ``image_size``, ``device``, ``text_fingerprint()`` and ``describe()``), so
    training can score its live model; ``progress(n)`` gets the samples each batch consumed.
    Returns one tally per text type, in ``cfg.text_types`` order.
    """
    encoder = make_image_encoder(loaded, cfg.precision)
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
        threads=getattr(encoder, "backend", "torch") == "onnx",
    )
    per_rank_limit = None if cfg.limit is None else share(cfg.limit, rank, world)
    onnx = getattr(encoder, "backend", "torch") == "onnx"  # decoding threads, no torch threads
    with contextlib.nullcontext() if onnx else cpu_threads(workers, encoder.device):
        batches = iter(loader)  # the workers decode the first batches while texts are encoded
        scorers = _scorers(loaded, ds, cfg, label)
        t1 = time.perf_counter()
        done = _image_pass(batches, encoder, scorers, ds, cfg, progress, per_rank_limit)
        t_images = time.perf_counter() - t1
    first = scorers[0].tally
    n_ok = done - sum(first.unreadable.values())
    for sc in scorers:
        t = sc.tally
        t.n_seen = done
        t.unreadable = Counter(first.unreadable)
        t.unreadable_examples = list(first.unreadable_examples)
        t.shard_problems = list(first.shard_problems)
        t.info = {**loaded.describe(), "precision": encoder.precision, "workers": workers, **t.info}
        t.timings["images_s"] = round(t_images, 3)
        t.timings["images_per_s"] = round(n_ok / t_images, 2) if t_images > 0 else None
    return [sc.tally for sc in scorers]


def _image_pass(
    batches: Any,
    encoder: Any,
    scorers: list[_TypeScorer],
    ds: Dataset,
    cfg: EvalConfig,
    progress: Callable[[int], None] | None,
    limit: int | None,
) -> int:
    """Encode every batch once and score it for every text type; returns the samples seen
    (unreadable images and shard problems are counted on the first scorer's tally)."""
    import numpy as np

    ranks, modes = list(cfg.ranks or ()), list(cfg.modes)
    s2c = {r: np.asarray(ds.bank.classes(r).species_to_class, dtype=np.int64) for r in RANKS}
    truth_of = TruthIndex(ds.bank, ranks)
    rows = _RowLabels(ds) if ds.names is not None else None
    names = list(ds.names.names) if ds.names is not None else []
    first = scorers[0].tally
    done = 0
    for batch in batches:
        if limit is not None:
            batch = trim(batch, limit - done)
        done += batch["n"]
        _note_shard_problems(batch.get("shard_problems", ()), first, cfg.strict)
        for key, reason in batch["bad"]:
            first.add_unreadable(key, reason)
        if batch["images"] is not None:
            feats = encoder(batch["images"])
            taxa = batch["taxa"]
            truth = np.asarray([truth_of(t) for t in taxa], dtype=np.int64)
            truth = truth.reshape(len(taxa), len(ranks))
            for sc in scorers:
                if sc.clf is not None:
                    _score_batch(sc.clf, feats, truth, taxa, ranks, modes, sc.tally, s2c)
                if rows is not None:
                    rows.score(sc, feats, batch["index"], names)
        if progress is not None:
            progress(batch["n"])
        if limit is not None and done >= limit:
            break
    return done


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
