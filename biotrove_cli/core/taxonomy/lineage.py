"""Lineage records and species identity.

A species is identified by its binomial ("Genus epithet") *and* its lineage, never by the bare
epithet: BioTrove stores ``species`` as the epithet only, and epithets such as "vulgaris" repeat
across genera. Keys are lower-case (matching ignores capitalisation); display names keep the
spelling of the metadata.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from biotrove_cli.core.taxonomy.rank import RANKS, Rank

_MISSING = {"", "nan", "none", "null", "na", "n/a", "<na>", "unknown", "-"}
_SPACE = re.compile(r"\s+")
KEY_SEP = "|"


def clean_name(value: object) -> str:
    """Normalise a metadata cell: strip, collapse whitespace; missing markers become ''."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    text = _SPACE.sub(" ", str(value)).strip()
    if text.lower() in _MISSING:
        return ""
    return text


@dataclass(frozen=True)
class Taxon:
    """One species-level taxon with its lineage, as written in the metadata.

    Attributes:
        names: the seven rank names kingdom..genus plus the species *epithet* ('' when missing).
        scientific_name: the full scientific name as written (may be a trinomial), or ''.
        common_name: vernacular name, or ''.
    """

    names: tuple[str, str, str, str, str, str, str]
    scientific_name: str = ""
    common_name: str = ""
    _keys: tuple[str, ...] = field(default=(), repr=False, compare=False, hash=False)

    @classmethod
    def from_parts(
        cls,
        kingdom: object = "",
        phylum: object = "",
        class_: object = "",
        order: object = "",
        family: object = "",
        genus: object = "",
        species: object = "",
        scientific_name: object = "",
        common_name: object = "",
    ) -> Taxon:
        """Build a cleaned Taxon from raw metadata cells.

        ``species`` may be the epithet ("grossa"), a binomial ("Steatoda grossa") or a trinomial;
        the genus and epithet are recovered from ``scientific_name`` when their columns are empty.
        Subspecies keep a species key (genus + first epithet).
        """
        parts = [clean_name(v) for v in (kingdom, phylum, class_, order, family, genus)]
        sci = clean_name(scientific_name)
        epithet = clean_name(species)
        genus_name = parts[5]
        sci_tokens = sci.split(" ") if sci else []
        if epithet:
            tokens = epithet.split(" ")
            if len(tokens) >= 2 and (not genus_name or tokens[0].lower() == genus_name.lower()):
                genus_name = genus_name or tokens[0]
                epithet = tokens[1]
            elif len(tokens) >= 2 and tokens[0][:1].islower():
                epithet = tokens[0]  # "lupus familiaris": keep the species epithet
        if not genus_name and len(sci_tokens) >= 2:
            genus_name = sci_tokens[0]
        if (
            not epithet
            and len(sci_tokens) >= 2
            and genus_name
            and sci_tokens[0].lower() == genus_name.lower()
        ):
            epithet = sci_tokens[1]
        parts[5] = genus_name
        if not sci and genus_name and epithet:
            sci = f"{genus_name} {epithet}"
        names = (*parts, epithet)
        return cls(names=names, scientific_name=sci, common_name=clean_name(common_name))  # type: ignore[arg-type]

    # -- names --------------------------------------------------------------------------
    @property
    def kingdom(self) -> str:
        return self.names[0]

    @property
    def genus(self) -> str:
        return self.names[5]

    @property
    def epithet(self) -> str:
        return self.names[6]

    @property
    def binomial(self) -> str:
        """'Genus epithet', or the scientific name when genus/epithet are unknown."""
        if self.genus and self.epithet:
            return f"{self.genus} {self.epithet}"
        return self.scientific_name

    @property
    def sci(self) -> str:
        """The scientific name for captions: as written, else the binomial."""
        return self.scientific_name or self.binomial

    def name_at(self, rank: Rank) -> str:
        """Display name at a rank ('' when missing); species gives the binomial."""
        if rank is Rank.SPECIES:
            return self.binomial if self.epithet else ""
        return self.names[rank.index]

    def has(self, rank: Rank) -> bool:
        return bool(self.name_at(rank))

    def deepest_rank(self) -> Rank | None:
        for rank in reversed(RANKS):
            if self.has(rank):
                return rank
        return None

    # -- keys ---------------------------------------------------------------------------
    def key_at(self, rank: Rank) -> str:
        """Case-insensitive identity of this taxon's ancestor at ``rank``: its lineage down to it.

        Returns '' when the rank itself is missing. Missing intermediate ranks stay empty slots,
        so two taxa match only when their lineages agree.
        """
        if not self.has(rank):
            return ""
        parts = [n.lower() for n in self.names[: rank.index]]
        parts.append(self.name_at(rank).lower())
        return KEY_SEP.join(parts)

    @property
    def species_key(self) -> str:
        """'genus epithet' plus the lineage (lower case): the species identity."""
        return self.key_at(Rank.SPECIES)

    def lineage_dict(self) -> dict[str, str]:
        """Rank name -> name as written; 'species' is the binomial."""
        return {rank.value: self.name_at(rank) for rank in RANKS}

    def taxon_string(self, upto: Rank = Rank.SPECIES) -> str:
        """'K P C O F G S' down to ``upto`` (species as the epithet), empty ranks dropped."""
        return " ".join(n for n in self.names[: upto.index + 1] if n)
