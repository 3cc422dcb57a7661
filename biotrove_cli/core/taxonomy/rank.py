"""The seven Linnaean ranks biotrove works with, in order from kingdom to species."""

from __future__ import annotations

from enum import Enum

from biotrove_cli.core.errors import UsageError


class Rank(str, Enum):
    """A taxonomic rank. Compares by position: ``Rank.KINGDOM < Rank.SPECIES``."""

    KINGDOM = "kingdom"
    PHYLUM = "phylum"
    CLASS = "class"
    ORDER = "order"
    FAMILY = "family"
    GENUS = "genus"
    SPECIES = "species"

    @property
    def index(self) -> int:
        return _ORDER[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Rank):
            return NotImplemented
        return self.index < other.index

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Rank):
            return NotImplemented
        return self.index <= other.index

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Rank):
            return NotImplemented
        return self.index > other.index

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Rank):
            return NotImplemented
        return self.index >= other.index

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str | Rank) -> Rank:
        """Parse user text (``Species``, ``cls``) into a Rank, or raise a usage error."""
        if isinstance(text, Rank):
            return text
        value = str(text).strip().lower()
        value = _ALIASES.get(value, value)
        for rank in cls:
            if rank.value == value:
                return rank
        raise UsageError(
            f"unknown taxonomic rank {text!r}",
            hint="use one of: " + ", ".join(r.value for r in cls),
        )

    @classmethod
    def parse_list(cls, text: str) -> list[Rank]:
        """Parse ``all`` or a comma-separated list of ranks, returned kingdom-first, no repeats."""
        value = text.strip().lower()
        if value in ("all", "*", ""):
            return list(cls)
        ranks = {cls.parse(part) for part in value.split(",") if part.strip()}
        return sorted(ranks, key=lambda r: r.index)


RANKS: tuple[Rank, ...] = tuple(Rank)
_ORDER = {rank: i for i, rank in enumerate(RANKS)}
_ALIASES = {"cls": "class", "specific_epithet": "species", "sp": "species", "gen": "genus"}
