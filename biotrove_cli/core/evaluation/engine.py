"""``biotrove eval``: zero-shot accuracy at every rank, in one image pass per model.

Data is a shard folder / split folder / brace pattern written by ``biotrove shard`` (its label
bank is the folder's ``taxonomy.parquet``), or a CSV/Parquet table with lineage columns and an
image path (or photo id) column plus ``--images DIR``. Images are decoded in DataLoader worker
processes (JPEG draft decoding near the model's input size), encoded in batches, and every
requested rank and mode is scored from the same features.

Distributed: :func:`evaluate` takes the process's rank and world size; shards (or table rows)
are split across processes and the tallies are gathered to rank 0, which alone returns the
result.

This module imports torch at import time; the CLI imports it inside the command body.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset

from biotrove_cli import __version__
from biotrove_cli.core.data.sample import sample_image_bytes, sample_meta, taxon_from_meta
from biotrove_cli.core.data.shards import iter_tar
from biotrove_cli.core.errors import InputError, SchemaError, UsageError
from biotrove_cli.core.evaluation.metrics import (
    CI_METHOD,
    TOPK,
    RankTally,
    SeverityTally,
)
from biotrove_cli.core.evaluation.zeroshot import (
    DEFAULT_TEMPLATES,
    DEFAULT_TEXT_TYPE,
    ImageEncoder,
    Mode,
    TextSettings,
    ZeroShotClassifier,
    build_classifier,
    cpu_threads,
    resolve_workers,
)
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

log = logging.getLogger("biotrove")

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
BLANK = -2  # truth index: the rank is blank for this row
MISSING = -1  # truth index: the bank has no such taxon
ProgressFn = Callable[[int, int], None]


@dataclass
class EvalConfig:
    """Everything ``biotrove eval`` needs; the CLI builds it from flags."""

    models: list[str]
    data: str
    images: str | None = None
    split: str = "val"
    labels: str | None = None
    ranks: list[Rank] = field(default_factory=lambda: list(RANKS))
    modes: list[Mode] = field(default_factory=lambda: [Mode.ROLLUP])
    text_type: str = DEFAULT_TEXT_TYPE
    templates: str = DEFAULT_TEMPLATES
    batch_size: int = 64
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None  # None: auto (see zeroshot.resolve_workers)
    limit: int | None = None
    use_cache: bool = True
    per_class: str | None = None
    confusion: tuple[Rank, str] | None = None
    plot: str | None = None
    arch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (for the distributed workers' config file)."""
        out = dict(self.__dict__)
        out["ranks"] = [r.value for r in self.ranks]
        out["modes"] = [m.value for m in self.modes]
        out["confusion"] = (
            [self.confusion[0].value, self.confusion[1]] if self.confusion is not None else None
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        data = dict(data)
        data["ranks"] = [Rank.parse(r) for r in data.get("ranks", [])]
        data["modes"] = [Mode(m) for m in data.get("modes", [])]
        conf = data.get("confusion")
        data["confusion"] = (Rank.parse(conf[0]), conf[1]) if conf else None
        return cls(**data)


# -- data ------------------------------------------------------------------------------------
@dataclass
class TableRow:
    key: str
    candidates: tuple[str, ...]  # image files to try, in order
    taxon: Taxon


def _image_candidates(path: str, photo_id: str, images: Path | None, base: Path) -> tuple[str, ...]:
    from biotrove_cli.core.data.images import IMAGE_SUFFIXES

    out: list[Path] = []
    if path:
        p = Path(path)
        if images is not None:
            out.append(images / path.lstrip("/\\"))
            out.append(images / p.name)
        if p.is_absolute():
            out.append(p)
        else:
            out.append(base / p)  # relative to the table's folder
            out.append(p)  # relative to the working folder
    elif photo_id and images is not None:
        out.extend(images / f"{photo_id}{s}" for s in (".jpg", *IMAGE_SUFFIXES[1:]))
    seen: list[str] = []
    for c in out:
        s = str(c)
        if s not in seen:
            seen.append(s)
    return tuple(seen)


def read_table_rows(data: Path, images: str | None) -> list[TableRow]:
    """The rows of an eval table: where each image is and its lineage."""
    from biotrove_cli.core.taxonomy.readers import read_metadata

    meta = read_metadata(data)
    if "path" not in meta.fields and "photo_id" not in meta.fields:
        raise SchemaError(
            f"{data}: no image column: need a path column ('path', 'file', 'filepath', "
            "'image_path'...) or 'photo_id' with --images DIR",
            hint=f"columns found: {', '.join(meta.columns)}",
        )
    img_dir = Path(images) if images else None
    if img_dir is not None and not img_dir.is_dir():
        raise InputError(f"{img_dir}: no such image folder", hint="check the --images path")
    if img_dir is None and "path" not in meta.fields:
        raise UsageError(
            f"{data}: images are named by photo id; say where they are",
            hint="add --images DIR (the folder holding {photo_id}.jpg files)",
        )
    rows = []
    for rec in meta.records:
        key = rec.path or rec.photo_id or f"row{rec.row}"
        cands = _image_candidates(rec.path, rec.photo_id, img_dir, data.parent)
        rows.append(TableRow(key=key, candidates=cands, taxon=rec.taxon))
    return rows


def _decode(data: bytes, source: str, preprocess: Any, draft: int) -> tuple[Any, str]:
    from biotrove_cli.core.data.images import ImageError, decode

    try:
        img = decode(data, source=source, draft=(draft, draft)).image
        return preprocess(img), ""
    except ImageError as exc:
        return None, exc.reason
    except (OSError, ValueError, RuntimeError):  # a transform that chokes on an image
        return None, "corrupt"


def load_file(candidates: Sequence[str], preprocess: Any, draft: int) -> tuple[Any, str]:
    """The first existing candidate, decoded and preprocessed; (None, reason) when it fails."""
    from biotrove_cli.core.data.images import ImageError, read_bytes

    if not candidates:
        return None, "missing"
    for cand in candidates:
        try:
            data = read_bytes(cand)
        except ImageError as exc:
            if exc.reason == "missing" and cand != candidates[-1]:
                continue
            return None, exc.reason
        return _decode(data, cand, preprocess, draft)
    return None, "missing"  # pragma: no cover - the loop returns


class TableDataset:
    """Map-style dataset over table rows (a torch Dataset by duck typing)."""

    def __init__(self, rows: list[TableRow], preprocess: Any, draft: int):
        self.rows = rows
        self.preprocess = preprocess
        self.draft = draft

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        image, reason = load_file(row.candidates, self.preprocess, self.draft)
        return {"key": row.key, "taxon": row.taxon, "image": image, "error": reason}


class ShardDataset(IterableDataset):
    """Samples of shards, split across distributed ranks and DataLoader workers.

    With at least as many shards as (ranks x workers), each reader takes whole shards; with
    fewer, every reader walks all shards and keeps every n-th sample, so no core sits idle.
    """

    def __init__(
        self,
        shards: list[Path],
        preprocess: Any,
        draft: int,
        rank: int = 0,
        world: int = 1,
        limit: int | None = None,
    ):
        super().__init__()
        self.shards = list(shards)
        self.preprocess = preprocess
        self.draft = draft
        self.rank = rank
        self.world = world
        self.limit = limit

    @staticmethod
    def _worker() -> tuple[int, int]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wid, nw = self._worker()
        me, total = self.rank * nw + wid, self.world * nw
        whole = len(self.shards) >= total
        shards = self.shards[me::total] if whole else self.shards
        yielded = 0
        index = -1  # sample index across all shards (used when readers share shards)
        for shard in shards:
            errors: list[str] = []
            for sample in iter_tar(shard, errors=errors):
                index += 1
                if not whole:
                    # sample i belongs to rank i % world; within the rank, to worker j % nw
                    if index % self.world != self.rank:
                        continue
                    local = index // self.world
                    if self.limit is not None and local >= self.limit:
                        return
                    if local % nw != wid:
                        continue
                elif self.limit is not None and yielded >= self.limit:
                    return
                yielded += 1
                yield self._item(shard, sample)
            if whole or me == 0:  # a shard every reader walks is reported once
                for e in errors:
                    yield {"key": e, "taxon": EMPTY_TAXON, "image": None, "error": "bad_shard"}

    def _item(self, shard: Path, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample["__key__"]
        taxon = taxon_from_meta(sample_meta(sample))
        data = sample_image_bytes(sample)
        if data is None:
            return {"key": key, "taxon": taxon, "image": None, "error": "missing"}
        image, reason = _decode(data, f"{shard.name}:{key}", self.preprocess, self.draft)
        return {"key": key, "taxon": taxon, "image": image, "error": reason}


EMPTY_TAXON = Taxon(names=("", "", "", "", "", "", ""))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decoded images; keep the failures aside with their reason."""
    import torch

    ok = [it for it in items if it["image"] is not None]
    return {
        "images": torch.stack([it["image"] for it in ok]) if ok else None,
        "taxa": [it["taxon"] for it in ok],
        "keys": [it["key"] for it in ok],
        "bad": [(it["key"], it["error"]) for it in items if it["image"] is None],
        "ok_flags": [it["image"] is not None for it in items],
        "n": len(items),
    }


def trim(batch: dict[str, Any], take: int) -> dict[str, Any]:
    """The first ``take`` items of a collated batch, in their original order."""
    if take >= batch["n"]:
        return batch
    flags = batch["ok_flags"][:take]
    n_ok = sum(flags)
    n_bad = take - n_ok
    images = batch["images"]
    return {
        "images": images[:n_ok] if images is not None and n_ok else None,
        "taxa": batch["taxa"][:n_ok],
        "keys": batch["keys"][:n_ok],
        "bad": batch["bad"][:n_bad],
        "ok_flags": flags,
        "n": take,
    }


@dataclass
class Dataset:
    """What to evaluate: its kind, its items, its label bank."""

    kind: str  # "shards" | "table"
    source: str
    bank: LabelBank
    shards: list[Path] = field(default_factory=list)
    rows: list[TableRow] = field(default_factory=list)
    total: int | None = None
    split: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": self.source, "kind": self.kind, "n_samples": self.total}
        if self.kind == "shards":
            out["split"] = self.split
            out["n_shards"] = len(self.shards)
        return out


def _is_table(path: Path) -> bool:
    from biotrove_cli.core.taxonomy.readers import table_suffix

    return path.is_file() and table_suffix(path) in TABLE_SUFFIXES


def open_dataset(cfg: EvalConfig) -> Dataset:
    """Resolve ``--data`` and the label bank; fail early with a clear message."""
    from biotrove_cli.core.data import shards as sh

    data = Path(cfg.data)
    bank: LabelBank | None = LabelBank.load(cfg.labels) if cfg.labels else None
    if bank is not None and bank.is_custom:
        raise UsageError(
            f"{cfg.labels}: a plain list of names has no lineage to score ranks against",
            hint="eval needs a label table with lineage columns (or leave --labels out to use "
            "the dataset's own species)",
        )
    if _is_table(data):
        rows = read_table_rows(data, cfg.images)
        if not rows:
            raise InputError(f"{data}: the table has no rows", hint="nothing to evaluate")
        if bank is None:
            bank = LabelBank.from_taxa([r.taxon for r in rows], source=str(data))
            if not bank.taxa:
                raise InputError(
                    f"{data}: no row names a species, so there are no classes to score",
                    hint="the table needs lineage columns (genus + species, or a scientific "
                    "name), or pass --labels FILE",
                )
        total = len(rows) if cfg.limit is None else min(len(rows), cfg.limit)
        return Dataset("table", str(data), bank, rows=rows, total=total)
    if data.is_file() and data.suffix.lower() not in (".tar",):
        raise InputError(
            f"{data}: not a shard (.tar) or a metadata table",
            hint="pass a shard folder, a .tar or brace pattern, or a CSV/Parquet table",
        )
    shards = sh.resolve_shards(cfg.data, split=cfg.split)
    if bank is None:
        root = sh.dataset_root(shards)
        if root is None:
            raise InputError(
                f"{cfg.data}: the shards have no taxonomy.parquet beside them, so the label "
                "bank is unknown",
                hint="pass --labels FILE (a metadata table with lineage)",
            )
        bank = LabelBank.load(root / sh.TAXONOMY)
        split = shards[0].parent.name
        # the classes of a split are the species it holds (when the counts say so)
        if bank.counts and any(split in c for c in bank.counts.values()):
            kept = [t for t in bank.taxa if bank.counts.get(t.species_key, {}).get(split, 0) > 0]
            if kept:
                bank = LabelBank(taxa=kept, source=f"{root / sh.TAXONOMY} ({split} species)")
    total = sh.count_samples(shards)
    if cfg.limit is not None:
        total = cfg.limit if total is None else min(total, cfg.limit)
    return Dataset(
        "shards", str(cfg.data), bank, shards=shards, total=total, split=shards[0].parent.name
    )


def make_loader(
    ds: Dataset,
    preprocess: Any,
    image_size: int,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
    limit: int | None = None,
    pin_memory: bool = False,
):
    from torch.utils.data import DataLoader

    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": workers,
        "collate_fn": collate,
        "pin_memory": pin_memory,
    }
    if workers > 0:
        kwargs["prefetch_factor"] = 4
    if ds.kind == "table":
        rows = ds.rows[:limit] if limit is not None else ds.rows
        dataset: Any = TableDataset(rows[rank::world], preprocess, image_size)
        return DataLoader(dataset, shuffle=False, **kwargs)
    per_rank = None if limit is None else _share(limit, rank, world)
    dataset = ShardDataset(ds.shards, preprocess, image_size, rank, world, per_rank)
    return DataLoader(dataset, **kwargs)


# -- scoring ---------------------------------------------------------------------------------
@dataclass
class ModelTally:
    """Everything counted for one model over the data."""

    spec: str
    label: str
    tallies: dict[tuple[Mode, Rank], RankTally] = field(default_factory=dict)
    severity: dict[Mode, SeverityTally] = field(default_factory=dict)
    unreadable: Counter = field(default_factory=Counter)
    unreadable_examples: list[str] = field(default_factory=list)
    n_seen: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def merge(self, other: ModelTally) -> None:
        for k, t in other.tallies.items():
            self.tallies[k] += t
        for m, s in other.severity.items():
            self.severity[m] += s
        self.unreadable.update(other.unreadable)
        for e in other.unreadable_examples:
            if len(self.unreadable_examples) < 5:
                self.unreadable_examples.append(e)
        self.n_seen += other.n_seen


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


def _model_label(spec: str, others: Sequence[str]) -> str:
    name = Path(spec).name if ("/" in spec or "\\" in spec) else spec
    return name if sum(1 for o in others if o == spec) <= 1 else spec


def _share(n: int, rank: int, world: int) -> int:
    """This rank's part of ``n`` items dealt round-robin over ``world`` ranks."""
    return n // world + (1 if rank < n % world else 0)


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
    tally = ModelTally(spec=getattr(loaded, "spec", label), label=label)
    for mode in modes:
        for r in ranks:
            tally.tallies[(mode, r)] = RankTally(
                r,
                clf.n_classes[r],
                track_confusion=cfg.confusion is not None and cfg.confusion[0] is r,
            )
        tally.severity[mode] = SeverityTally()
    s2c = {r: np.asarray(ds.bank.classes(r).species_to_class, dtype=np.int64) for r in RANKS}
    truth_of = TruthIndex(ds.bank, ranks)
    workers = resolve_workers(cfg.workers, encoder.device, encoder.params)
    loader = make_loader(
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
    per_rank_limit = None if cfg.limit is None else _share(cfg.limit, rank, world)
    t1 = time.perf_counter()
    done = 0
    with cpu_threads(workers, encoder.device):
        for batch in loader:
            if per_rank_limit is not None:
                batch = trim(batch, per_rank_limit - done)
            done += batch["n"]
            for key, reason in batch["bad"]:
                tally.unreadable[reason] += 1
                if len(tally.unreadable_examples) < 5:
                    tally.unreadable_examples.append(f"{key} ({reason})")
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


def _gather(tally: ModelTally, world: int) -> ModelTally | None:
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


# -- results ---------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Records (one per model x mode x rank) and the document around them."""

    records: list[dict[str, Any]]
    document: dict[str, Any]
    models: list[ModelTally]
    dataset: Dataset
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def severity_rows(self) -> list[dict[str, Any]]:
        """Mistake severity per model and mode (when the species rank was scored)."""
        rows = []
        for m in self.models:
            for mode, sev in m.severity.items():
                if (mode, Rank.SPECIES) in m.tallies:
                    rows.append({"model": m.label, "mode": mode.value, **sev.metrics()})
        return rows

    def payload(self) -> dict[str, Any]:
        """Everything the CLI renders, as plain JSON values."""
        return {
            "records": self.records,
            "document": self.document,
            "severity": [{k: _round(v) for k, v in r.items()} for r in self.severity_rows()],
            "notes": self.notes,
            "files": self.files,
        }


def _round(v: Any) -> Any:
    if isinstance(v, float) and not math.isnan(v):
        return round(v, 6)
    return v


def build_records(models: list[ModelTally], cfg: EvalConfig) -> list[dict[str, Any]]:
    records = []
    for m in models:
        for mode in cfg.modes:
            for rank in cfg.ranks:
                t = m.tallies[(mode, rank)]
                rec: dict[str, Any] = {"model": m.label, "model_spec": m.spec, "mode": mode.value}
                rec["rank"] = rank.value
                rec.update({k: _round(v) for k, v in t.metrics().items()})
                rec["n_unreadable"] = sum(m.unreadable.values())
                if rank is Rank.SPECIES:
                    rec.update({k: _round(v) for k, v in m.severity[mode].metrics().items()})
                records.append(rec)
    return records


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _notes(models: list[ModelTally], cfg: EvalConfig) -> list[str]:
    """Plain sentences about excluded rows, for stderr."""
    notes: list[str] = []
    if not models:
        return notes
    m = models[0]
    mode = cfg.modes[0]
    for rank in cfg.ranks:
        t = m.tallies[(mode, rank)]
        if t.n_blank:
            notes.append(
                f"{_images(t.n_blank)} without a {rank.value} left out of the {rank.value} metrics"
            )
        if t.n_not_in_bank:
            ex = ", ".join(t.not_in_bank_examples)
            notes.append(
                f"{_images(t.n_not_in_bank)} with a {rank.value} the label bank lacks "
                f"(e.g. {ex}) left out of the {rank.value} metrics"
            )
    bad = sum(m.unreadable.values())
    if bad:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(m.unreadable.items()))
        ex = "; ".join(m.unreadable_examples[:3])
        notes.append(f"{_images(bad)} unreadable, skipped ({reasons}; e.g. {ex})")
    return notes


def write_per_class(path: str, models: list[ModelTally], bank: LabelBank, cfg: EvalConfig) -> None:
    from biotrove_cli.core.io import atomic_write_text

    cols = [
        "model",
        "mode",
        "rank",
        "class",
        "common_name",
        "support",
        "correct_top1",
        "recall_top1",
        "correct_top5",
        "recall_top5",
        "predicted",
        "precision",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for m in models:
        for mode in cfg.modes:
            for rank in cfg.ranks:
                rc = bank.classes(rank)
                for row in m.tallies[(mode, rank)].per_class():
                    c = row.pop("index")
                    common = rc.taxa[c].common_name if rank is Rank.SPECIES else ""
                    w.writerow(
                        {
                            "model": m.label,
                            "mode": mode.value,
                            "rank": rank.value,
                            "class": rc.names[c],
                            "common_name": common,
                            **{k: _fmt(v) for k, v in row.items()},
                        }
                    )
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_confusion(path: str, rank: Rank, models: list[ModelTally], bank: LabelBank) -> None:
    """The confusion matrix at one rank as non-zero cells: model, mode, truth, predicted, count."""
    from biotrove_cli.core.io import atomic_write_text

    names = bank.classes(rank).names
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "mode", "rank", "truth", "predicted", "count"])
    for m in models:
        for (mode, r), t in m.tallies.items():
            if r is not rank:
                continue
            for ti, pi, n in t.confusion_pairs():
                w.writerow([m.label, mode.value, rank.value, names[ti], names[pi], n])
    atomic_write_text(path, buf.getvalue())


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            hint="pip install 'biotrove[plot]' (or pip install matplotlib)",
        ) from exc


def write_plot(path: str, records: list[dict[str, Any]], cfg: EvalConfig, title: str) -> None:
    """A PNG bar chart of top-1 accuracy by rank, one bar per model x mode, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from biotrove_cli.core.io import atomic_open

    series: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        name = f"{r['model']} ({r['mode']})" if len(cfg.modes) > 1 else r["model"]
        series.setdefault(name, {})[r["rank"]] = r
    ranks = [r.value for r in cfg.ranks]
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ranks) + 2), 4.5), dpi=120)
    for i, (name, by_rank) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for j, rank in enumerate(ranks):
            rec = by_rank.get(rank)
            if rec is None or rec["top1"] is None or _nan(rec["top1"]):
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * rec["top1"])
            lo.append(100 * (rec["top1"] - rec["top1_ci_low"]))
            hi.append(100 * (rec["top1_ci_high"] - rec["top1"]))
        ax.bar(xs, ys, width=width * 0.95, label=name, yerr=[lo, hi], capsize=2)
    ax.set_xticks(range(len(ranks)), ranks)
    ax.set_ylabel("top-1 accuracy (%), 95% Wilson CI")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# -- entry point -----------------------------------------------------------------------------
def evaluate(
    cfg: EvalConfig,
    progress: ProgressFn | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> EvalResult | None:
    """Evaluate every model on the data; rank 0 (or a single process) returns the result.

    Args:
        progress: a ``(done, total)`` callback over all models' image passes (this process's
            share of the samples; total is None-safe: ``done`` when the size is unknown).
        rank, world_size: this process's place among distributed processes; read from
            ``torch.distributed`` when it is initialised and these are None.
    """
    if not cfg.models:
        raise UsageError("no model given", hint="pass --model MODEL (repeat it to compare)")
    if cfg.plot:
        check_plot_available()
    text = TextSettings.from_spec(cfg.text_type, cfg.templates)  # bad values fail before work
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {cfg.limit}")
    if rank is None or world_size is None:
        rank, world_size = _dist_place()
    ds = open_dataset(cfg)
    for r in cfg.ranks:
        if len(ds.bank.classes(r)) == 0:
            raise InputError(
                f"the label bank has no {r.value} names, so {r.value} cannot be scored",
                hint="leave that rank out with --ranks, or use labels with that rank filled",
            )
    t0 = time.perf_counter()
    per_model = None if ds.total is None else _share(ds.total, rank, world_size)
    total = None if per_model is None else per_model * len(cfg.models)
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total if total is not None else done[0])

    models: list[ModelTally] = []
    for spec in cfg.models:
        label = _model_label(spec, cfg.models)
        tally = evaluate_model(spec, ds, cfg, step, rank, world_size, label=label)
        if world_size > 1:
            tally = _gather(tally, world_size)
            if tally is None:
                continue
        models.append(tally)
    if rank != 0:
        return None
    seen = models[0].n_seen if models else 0
    if seen == 0:
        raise InputError(f"{cfg.data}: the dataset is empty (no samples)", hint="nothing to score")
    usable = any(m.tallies[k].n_images for m in models for k in m.tallies)
    if not usable:
        t = models[0].tallies[(cfg.modes[0], cfg.ranks[-1])]
        bad = sum(models[0].unreadable.values())
        why = (
            f"all {bad} images were unreadable"
            if bad >= seen
            else "no image's lineage matches the label bank at any requested rank"
            + (f" (e.g. {', '.join(t.not_in_bank_examples)})" if t.not_in_bank_examples else "")
        )
        raise InputError(
            f"{cfg.data}: nothing to score: {why}",
            hint="check the images folder and that --labels covers the data's species",
        )
    records = build_records(models, cfg)
    document = {
        "biotrove_version": __version__,
        **ds.describe(),
        "labels": {"source": ds.bank.source, "n_species": len(ds.bank)},
        "ranks": [r.value for r in cfg.ranks],
        "modes": [m.value for m in cfg.modes],
        "text_type": text.text_type,
        "templates": text.templates_name,
        "n_templates": len(text.templates),
        "ci": {"level": 0.95, **CI_METHOD},
        "world_size": world_size,
        "seconds": round(time.perf_counter() - t0, 3),
        "models": [
            {
                "model": m.label,
                "spec": m.spec,
                **{k: v for k, v in m.info.items() if k not in ("spec",)},
                "n_images": m.n_seen,
                "n_unreadable": sum(m.unreadable.values()),
                "unreadable": dict(m.unreadable),
                "timings": m.timings,
            }
            for m in models
        ],
    }
    result = EvalResult(records, document, models, ds, notes=_notes(models, cfg))
    if cfg.per_class:
        write_per_class(cfg.per_class, models, ds.bank, cfg)
        result.files["per_class"] = cfg.per_class
    if cfg.confusion is not None:
        write_confusion(cfg.confusion[1], cfg.confusion[0], models, ds.bank)
        result.files["confusion"] = cfg.confusion[1]
    if cfg.plot:
        write_plot(cfg.plot, records, cfg, title=f"Zero-shot top-1 by rank: {Path(cfg.data).name}")
        result.files["plot"] = cfg.plot
    document["files"] = dict(result.files)
    return result


def _dist_place() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1
