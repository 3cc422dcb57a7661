"""What ``biotrove eval`` reads: datasets and their loaders.

Data is a shard folder / split folder / brace pattern written by ``biotrove shard``, local or
remote (http(s)://, s3://, gs://, ``pipe:``; its label bank is the ``taxonomy.parquet`` beside
the shards), a CSV/Parquet table (BioTrove and VLHub metadata as published, :mod:`.tables`), or
a folder of class subfolders. Images are decoded in DataLoader worker
processes (JPEG draft decoding near the model's input size); failures travel with the batch as
reason codes, so they are counted instead of stopping the pass. A shard that cannot be read
(after retries) or ends early travels as a ``shard_problems`` entry of the batch: counted with
the samples it lost against ``sizes.json``, not as an unreadable image.

Distributed: shards (or table rows) are split across processes, and across each process's
DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.sample import sample_image_bytes, sample_meta, taxon_from_meta
from biotrove_cli.core.data.shards import Prefetch, ReadOptions, ShardProblem, read_shard
from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.decode import collate, decode_image, load_file
from biotrove_cli.core.evaluation.labels import NameClasses
from biotrove_cli.core.evaluation.tables import (
    TableRow,
    TableSource,
    fill_lineage,
    is_image_folder,
    label_rows,
    read_image_folder,
    read_table,
)
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS, Rank
from biotrove_cli.core.taxonomy.readers import SUPPORTED_SUFFIXES, table_suffix

# what --data may be as a table: the metadata formats, less a .txt list of names
TABLE_SUFFIXES = tuple(s for s in SUPPORTED_SUFFIXES if s != ".txt")


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
        image, reason = load_file(row.files, self.preprocess, self.draft)
        return {
            "key": row.key,
            "taxon": row.taxon,
            "image": image,
            "error": reason,
            "index": row.index,
        }


class ShardDataset:
    """Samples of shards, split across distributed ranks and DataLoader workers.

    With at least as many shards as (ranks x workers), each reader takes whole shards; with
    fewer, every reader walks all shards and keeps every n-th sample, so no core sits idle.
    A shard problem is yielded as an item with ``problem`` set (once, by one reader).
    """

    def __init__(
        self,
        shards: list[str],
        preprocess: Any,
        draft: int,
        rank: int = 0,
        world: int = 1,
        limit: int | None = None,
        sizes: Sequence[int | None] = (),
        options: ReadOptions | None = None,
    ):
        super().__init__()
        self.shards = [str(s) for s in shards]
        self.preprocess = preprocess
        self.draft = draft
        self.rank = rank
        self.world = world
        self.limit = limit
        self.sizes = dict(zip(self.shards, sizes, strict=False))
        self.options = options or ReadOptions()

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
        with closing(Prefetch(self.options)) as prefetch:
            for i, shard in enumerate(shards):
                stream = prefetch.take(shard)
                if i + 1 < len(shards):
                    prefetch.start(shards[i + 1])  # its connection opens while this one is read
                problems: list[ShardProblem] = []
                for sample in read_shard(
                    shard,
                    expected=self.sizes.get(shard),
                    options=self.options,
                    on_problem=problems.append,
                    stream=stream,
                ):
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
                    for p in problems:
                        yield {"key": p.location, "taxon": EMPTY_TAXON, "image": None, "problem": p}

    def _item(self, shard: str, sample: dict[str, Any]) -> dict[str, Any]:
        from biotrove_cli.core.data.urls import shard_name

        key = sample["__key__"]
        taxon = taxon_from_meta(sample_meta(sample))
        data = sample_image_bytes(sample)
        if data is None:
            return {"key": key, "taxon": taxon, "image": None, "error": "missing"}
        source = f"{shard_name(shard)}:{key}"
        image, reason = decode_image(data, source, self.preprocess, self.draft)
        return {"key": key, "taxon": taxon, "image": image, "error": reason}


EMPTY_TAXON = Taxon(names=("", "", "", "", "", "", ""))


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
        "index": batch["index"][:n_ok],
        "bad": batch["bad"][:n_bad],
        "ok_flags": flags,
        "n": take,
        "shard_problems": batch.get("shard_problems", []),
    }


@dataclass
class Dataset:
    """What to evaluate: its kind, its items, its label bank and the levels to score."""

    kind: str  # "shards" | "table" | "folder"
    source: str
    bank: LabelBank
    shards: list[str] = field(default_factory=list)
    rows: list[TableRow] = field(default_factory=list)
    total: int | None = None
    split: str | None = None
    sizes: tuple[int | None, ...] = ()  # sizes.json count per shard
    options: ReadOptions = field(default_factory=ReadOptions)
    ranks: list[Rank] = field(default_factory=list)  # the ranks scored
    table: TableSource | None = None  # a table's (or folder's) label level, groups, paths

    @property
    def names(self) -> NameClasses | None:
        """The classes of the label level or of the candidate sets, when there are any."""
        return self.table.names if self.table is not None else None

    @property
    def candidates(self) -> bool:
        return self.table is not None and self.table.candidates

    def describe(self) -> dict[str, Any]:
        """The data's part of the result document."""
        out: dict[str, Any] = {"data": self.source, "kind": self.kind, "n_samples": self.total}
        if self.kind == "shards":
            out["split"] = self.split
            out["n_shards"] = len(self.shards)
        if self.table is not None:
            out.update(self.table.describe())
        return out


def _is_table(path: Path) -> bool:
    return path.is_file() and table_suffix(path) in TABLE_SUFFIXES


def _load_labels(cfg: EvalConfig) -> LabelBank | None:
    bank: LabelBank | None = LabelBank.load(cfg.labels) if cfg.labels else None
    if bank is not None and bank.is_custom:
        raise UsageError(
            f"{cfg.labels}: a plain list of names has no lineage to score ranks against",
            hint="eval needs a label table with lineage columns (or leave --labels out to use "
            "the dataset's own species)",
        )
    return bank


def open_dataset(cfg: EvalConfig) -> Dataset:
    """Resolve ``--data``, the label bank and the ranks; fail early with a clear message."""
    data = Path(cfg.data)
    bank = _load_labels(cfg)
    if cfg.group_by and not cfg.candidates:
        raise UsageError(
            "--group-by groups candidate-set results", hint="add --candidates COL, or drop it"
        )
    if _is_table(data) or is_image_folder(data):
        return _open_rows(cfg, data, bank)
    if cfg.label_col or cfg.candidates:
        flag = "--label-col" if cfg.label_col else "--candidates"
        raise UsageError(
            f"{flag} names a column of a table, and {cfg.data} is not a table",
            hint="pass --data FILE.csv (or .parquet) with that column",
        )
    return _open_shards(cfg, data, bank)


def _open_rows(cfg: EvalConfig, data: Path, bank: LabelBank | None) -> Dataset:
    """A metadata table or an image folder: its rows, their labels, the bank and ranks."""
    if _is_table(data):
        rows, src = read_table(
            data, cfg.images, cfg.label_col, cfg.candidates, cfg.group_by, cfg.limit
        )
    else:
        if cfg.label_col or cfg.candidates:
            raise UsageError(
                f"{data} is an image folder: its classes are its subfolders' names",
                hint="drop --label-col/--candidates, or pass a table with those columns",
            )
        rows, src = read_image_folder(data)
        rows = rows if cfg.limit is None else rows[: cfg.limit]
    if not rows:
        what = "the table has no rows" if src.kind == "table" else "no images in its subfolders"
        raise InputError(f"{data}: {what}", hint="nothing to evaluate")
    label_rows(rows, src, bank)
    lineage = src.has_lineage or bank is not None
    if bank is not None and not src.has_lineage and not src.candidates:
        fill_lineage(rows, bank)
    if bank is None:
        bank = LabelBank.from_taxa([r.taxon for r in rows], source=str(data))
    ranks = _ranks(cfg, bank, lineage, src.candidates)
    if not ranks and src.names is None:
        raise InputError(
            f"{data}: no row names a species, so there are no classes to score",
            hint="the table needs lineage columns (genus + species, or a scientific "
            "name), or pass --label-col COL (the column of class names) or --labels FILE",
        )
    return Dataset(src.kind, str(data), bank, rows=rows, total=len(rows), ranks=ranks, table=src)


def _ranks(cfg: EvalConfig, bank: LabelBank, lineage: bool, candidates: bool) -> list[Rank]:
    """The ranks asked for (each must have names), or by default those the data has: none for
    candidate sets, species alone without lineage columns, else every rank with names."""
    if cfg.ranks is not None:
        if candidates:
            raise UsageError(
                "--ranks does not apply to --candidates (each photo is scored against its own "
                "candidate names)",
                hint="drop --ranks",
            )
        for r in cfg.ranks:
            if len(bank.classes(r)) == 0:
                raise InputError(
                    f"the label bank has no {r.value} names, so {r.value} cannot be scored",
                    hint="leave that rank out with --ranks, or use labels with that rank filled",
                )
        return list(cfg.ranks)
    if candidates or not bank.taxa:
        return []
    if not lineage:
        return [Rank.SPECIES]
    return [r for r in RANKS if len(bank.classes(r)) > 0]


def _open_shards(cfg: EvalConfig, data: Path, bank: LabelBank | None) -> Dataset:
    from biotrove_cli.core.data import shards as sh

    if data.is_file() and data.suffix.lower() not in (".tar",):
        raise InputError(
            f"{data}: not a shard (.tar) or a metadata table",
            hint="pass a shard folder, a .tar or brace pattern, a CSV/Parquet table, or a "
            "folder of class subfolders",
        )
    shards = sh.open_shards(
        cfg.data, split=cfg.split, options=ReadOptions(cfg.retries, cfg.timeout)
    )
    if bank is None:
        bank = _shard_bank(shards, cfg.data)
    total = shards.total
    if cfg.limit is not None:
        total = cfg.limit if total is None else min(total, cfg.limit)
    return Dataset(
        "shards",
        str(cfg.data),
        bank,
        shards=shards.locations,
        total=total,
        split=shards.split,
        sizes=shards.expected(),
        options=shards.options,
        ranks=_ranks(cfg, bank, True, False),
    )


def _shard_bank(shards: Any, data: str) -> LabelBank:
    """The label bank of the shards' taxonomy.parquet: the species of their split."""
    from biotrove_cli.core.data.shards import taxonomy_file

    with taxonomy_file(shards) as (path, source):
        if path is None:
            raise InputError(
                f"{data}: the shards have no taxonomy.parquet beside them, so the label "
                f"bank is unknown ({source})",
                hint="pass --labels FILE (a metadata table with lineage)",
            )
        bank = LabelBank.load(path)
    split = shards.split
    # the classes of a split are the species it holds (when the counts say so)
    if bank.counts and any(split in c for c in bank.counts.values()):
        kept = [t for t in bank.taxa if bank.counts.get(t.species_key, {}).get(split, 0) > 0]
        if kept:
            return LabelBank(taxa=kept, source=f"{source} ({split} species)")
    bank.source = source
    return bank


def image_loader(dataset: Any, batch_size: int, workers: int, pin_memory: bool = False) -> Any:
    """A DataLoader over a dataset of decoded images, batched by :func:`collate` (eval and
    classify): ``workers`` processes decode, each a few batches ahead."""
    from torch.utils.data import DataLoader

    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": workers,
        "collate_fn": collate,
        "pin_memory": pin_memory,
    }
    if workers > 0:
        from biotrove_cli.core.processes import loader_worker_init

        kwargs["prefetch_factor"] = 4
        kwargs["worker_init_fn"] = loader_worker_init  # they end with this process
    return DataLoader(dataset, **kwargs)


def eval_loader(
    ds: Dataset,
    preprocess: Any,
    image_size: int,
    batch_size: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
    limit: int | None = None,
    pin_memory: bool = False,
    threads: bool = False,
) -> Any:
    """The image batches of this rank's share of an eval dataset (its first ``limit`` samples).

    ``threads``: decode in threads, without torch's DataLoader (the ONNX backend; tables and
    image folders: shards stream through a DataLoader either way)."""
    if ds.kind != "shards":
        rows = ds.rows[:limit] if limit is not None else ds.rows
        dataset: Any = TableDataset(rows[rank::world], preprocess, image_size)
    else:
        from biotrove_cli.core.evaluation.torch_iterable import TorchIterable

        per_rank = None if limit is None else share(limit, rank, world)
        dataset = TorchIterable(
            ShardDataset(
                ds.shards, preprocess, image_size, rank, world, per_rank, ds.sizes, ds.options
            )
        )
    if threads and ds.kind != "shards":
        from biotrove_cli.core.evaluation.threaded import thread_batches

        return thread_batches(dataset, batch_size, max(1, workers), collate)
    return image_loader(dataset, batch_size, workers, pin_memory)


def share(n: int, rank: int, world: int) -> int:
    """This rank's part of ``n`` items dealt round-robin over ``world`` ranks."""
    return n // world + (1 if rank < n % world else 0)
