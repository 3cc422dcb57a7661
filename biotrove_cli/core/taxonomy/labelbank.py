"""Label banks: the classes a zero-shot classifier chooses from, at every rank.

A bank holds unique species (identified by "Genus epithet" + lineage) and derives the classes of
each higher rank from them, with the species -> class index used to roll species probabilities
up. A bank can also be a plain list of custom labels (pybioclip's ``--cls``), which has no ranks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.taxonomy.banks import bank_names, named_bank
from biotrove_cli.core.taxonomy.lineage import Taxon, clean_name
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

BANK_COLUMNS = (
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
    "species",
    "scientific_name",
    "common_name",
    "species_key",
)


@dataclass
class RankClasses:
    """The classes of one rank: keys, display names, and the species -> class map."""

    rank: Rank
    keys: list[str]
    names: list[str]
    taxa: list[Taxon]  # one representative species per class (for its lineage)
    species_to_class: list[int]  # per bank species, its class index at this rank (-1: unknown)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class LabelBank:
    """A set of species classes (or custom labels) to classify into."""

    taxa: list[Taxon] = field(default_factory=list)
    custom_labels: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # species_key -> split -> n
    source: str = ""
    skipped_rows: int = 0

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_taxa(cls, taxa, source: str = "") -> LabelBank:
        """Unique species of ``taxa`` (rows without a species are counted in skipped_rows)."""
        seen: dict[str, Taxon] = {}
        skipped = 0
        for taxon in taxa:
            key = taxon.species_key
            if not key:
                skipped += 1
                continue
            prev = seen.get(key)
            if prev is None or (not prev.common_name and taxon.common_name):
                seen[key] = taxon
        ordered = sorted(seen.values(), key=lambda t: t.species_key)
        return cls(taxa=ordered, source=source, skipped_rows=skipped)

    @classmethod
    def custom(cls, names: list[str], source: str = "") -> LabelBank:
        labels: list[str] = []
        for name in names:
            name = clean_name(name)
            if name and name not in labels:
                labels.append(name)
        if not labels:
            raise InputError(
                f"{source or 'labels'}: no usable label names",
                hint="give one name per line, or a metadata table with lineage",
            )
        return cls(custom_labels=labels, source=source)

    @classmethod
    def from_metadata(cls, paths: list[str | Path]) -> LabelBank:
        from biotrove_cli.core.taxonomy.readers import read_metadata

        taxa: list[Taxon] = []
        for p in paths:
            taxa.extend(read_metadata(p).taxa())
        bank = cls.from_taxa(taxa, source=", ".join(str(p) for p in paths))
        if not bank.taxa:
            raise InputError(
                f"{bank.source}: no row names a species (genus + epithet or a scientific name)",
                hint="a label file needs species-level rows",
            )
        return bank

    @classmethod
    def load(cls, path: str | Path) -> LabelBank:
        """Load a bank from a saved bank, any metadata table, a shard folder or a names list.

        * a folder: its ``taxonomy.parquet`` (shard folders) or ``labels.parquet`` (bundles/runs);
        * ``.txt``: one custom label per line (``#`` comments allowed);
        * a table: species-level rows of any schema :mod:`readers` knows;
        * the name of a bank shipped in the package (:mod:`banks`: ``inat2021``, ``demo``).
        """
        named = named_bank(path)
        if named is not None:
            bank = cls.load(named.path)
            bank.source = named.name
            return bank
        path = Path(path)
        if path.is_dir():
            for name in ("labels.parquet", "taxonomy.parquet"):
                if (path / name).is_file():
                    return cls.load(path / name)
            # a split folder inside a shard folder
            if (path.parent / "taxonomy.parquet").is_file():
                return cls.load(path.parent / "taxonomy.parquet")
            raise InputError(
                f"{path}: holds no labels.parquet or taxonomy.parquet",
                hint="pass a label file, a shard folder or a model bundle",
            )
        if not path.exists():
            raise InputError(
                f"{path}: no such label file",
                hint=f"check the --labels path, or name a shipped bank ({bank_names()})",
            )
        if path.suffix.lower() == ".txt":
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{path}: cannot read it ({exc})") from exc
            names = [ln for ln in (line.split("#", 1)[0] for line in lines) if ln.strip()]
            return cls.custom(names, source=str(path))
        saved_custom = _read_saved_custom(path)
        if saved_custom is not None:  # what save() writes for a custom bank
            return cls.custom(saved_custom, source=str(path))
        bank = cls.from_metadata([path])
        bank.counts = _read_counts(path)
        return bank

    def save(self, path: str | Path) -> Path:
        """Write the bank as Parquet (atomically); custom banks keep their labels."""
        import pyarrow as pa

        from biotrove_cli.core.io import atomic_write_parquet

        path = Path(path)
        if self.is_custom:
            table = pa.table({"label": self.custom_labels})
        else:
            cols: dict[str, list] = {c: [] for c in BANK_COLUMNS}
            for t in self.taxa:
                for rank, name in zip(RANKS, t.names, strict=True):
                    cols[rank.value].append(name)
                cols["scientific_name"].append(t.scientific_name)
                cols["common_name"].append(t.common_name)
                cols["species_key"].append(t.species_key)
            splits = sorted({s for c in self.counts.values() for s in c})
            for split in splits:
                cols[f"n_{split}"] = [
                    self.counts.get(t.species_key, {}).get(split, 0) for t in self.taxa
                ]
            table = pa.table(cols)
        atomic_write_parquet(table, path)
        return path

    # -- queries --------------------------------------------------------------------------
    @property
    def is_custom(self) -> bool:
        return bool(self.custom_labels)

    def __len__(self) -> int:
        return len(self.custom_labels) if self.is_custom else len(self.taxa)

    @cached_property
    def _rank_classes(self) -> dict[Rank, RankClasses]:
        out: dict[Rank, RankClasses] = {}
        for rank in RANKS:
            index: dict[str, int] = {}
            keys: list[str] = []
            names: list[str] = []
            reps: list[Taxon] = []
            mapping: list[int] = []
            for taxon in self.taxa:
                key = taxon.key_at(rank)
                if not key:
                    mapping.append(-1)
                    continue
                idx = index.get(key)
                if idx is None:
                    idx = index[key] = len(keys)
                    keys.append(key)
                    names.append(taxon.name_at(rank))
                    reps.append(taxon)
                mapping.append(idx)
            out[rank] = RankClasses(rank, keys, names, reps, mapping)
        return out

    def classes(self, rank: Rank) -> RankClasses:
        if self.is_custom:
            raise UsageError(
                "custom labels have no taxonomic ranks",
                hint="use a label table with lineage columns to work per rank",
            )
        return self._rank_classes[rank]

    @cached_property
    def _name_index(self) -> dict[Rank, dict[str, int]]:
        """rank -> lower-case name -> class index, for names that are unambiguous in the bank."""
        out: dict[Rank, dict[str, int]] = {}
        for rank in RANKS:
            rc = self._rank_classes[rank]
            counts = Counter(n.lower() for n in rc.names)
            out[rank] = {n.lower(): i for i, n in enumerate(rc.names) if counts[n.lower()] == 1}
        return out

    def match(self, taxon: Taxon, rank: Rank) -> int:
        """Class index of ``taxon``'s ancestor at ``rank``, or -1 when the bank lacks it.

        Exact lineage keys match first; otherwise the name at that rank (the binomial for
        species) matches when it is unambiguous in the bank, so data whose higher lineage is
        spelled differently (or is incomplete) still finds its species.
        """
        key = taxon.key_at(rank)
        if not key:
            return -1
        idx = self._key_index[rank].get(key)
        if idx is not None:
            return idx
        return self._name_index[rank].get(taxon.name_at(rank).lower(), -1)

    @cached_property
    def _key_index(self) -> dict[Rank, dict[str, int]]:
        return {r: {k: i for i, k in enumerate(self._rank_classes[r].keys)} for r in RANKS}

    def within(self, name: str) -> LabelBank:
        """The species under a taxon of any rank (``Aves``, ``Quercus``, ``Quercus alba``)."""
        wanted = clean_name(name).lower()
        kept = [t for t in self.taxa if any(t.name_at(r).lower() == wanted for r in RANKS)]
        if not kept:
            raise InputError(
                f"no species in the label bank lies within {name!r}",
                hint="check the spelling; any rank name works (e.g. Aves, Quercus)",
            )
        return LabelBank(taxa=kept, source=f"{self.source} within {name}")

    def restrict(self, checklist: LabelBank) -> LabelBank:
        """The species of this bank that a checklist names (by key, or by binomial)."""
        wanted_keys = {t.species_key for t in checklist.taxa}
        wanted_names = {t.binomial.lower() for t in checklist.taxa}
        wanted_names |= {lbl.lower() for lbl in checklist.custom_labels}
        kept = [
            t
            for t in self.taxa
            if t.species_key in wanted_keys or t.binomial.lower() in wanted_names
        ]
        if not kept:
            raise InputError(
                "the checklist names no species of the label bank",
                hint="checklist rows need binomials or lineage that the bank has",
            )
        return LabelBank(taxa=kept, source=f"{self.source} on checklist {checklist.source}")

    def summary(self) -> dict[str, int]:
        if self.is_custom:
            return {"labels": len(self.custom_labels)}
        return {r.value: len(self.classes(r)) for r in RANKS}


def _read_counts(path: Path) -> dict[str, dict[str, int]]:
    """Per-split counts from a bank/taxonomy parquet (columns ``n_<split>``), else {}."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return {}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names
    if "species_key" not in names:
        return {}
    keys = table.column("species_key").to_pylist()
    out: dict[str, dict[str, int]] = {k: {} for k in keys}
    for name in names:
        if name.startswith("n_"):
            for k, v in zip(keys, table.column(name).to_pylist(), strict=True):
                out[k][name[2:]] = int(v or 0)
    return out


def _read_saved_custom(path: Path) -> list[str] | None:
    """The labels of a custom bank written by :meth:`LabelBank.save` (a Parquet file whose only
    column is ``label``), else None."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return None
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception:  # unreadable: let the metadata reader report it
        return None
    if names != ["label"]:
        return None
    return [str(v) for v in pq.read_table(path).column("label").to_pylist() if v is not None]
