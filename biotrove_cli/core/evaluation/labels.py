"""Class names that come from a label column, a candidate list or a folder name, rather than
from lineage: how they are compared, whether they are scientific names, and their class texts.

Names match exactly after whitespace and case normalisation (``"Harmonia  Axyridis"`` is
``"harmonia axyridis"``; ``"Harmonia axyridies"`` is another name). A scientific name written
with its author citation (``"Amanita excelsa Gonn. & Rabenh."``) also matches by its binomial
when that binomial names exactly one class.

A column of scientific names gets the class texts of every text type, built from a taxon
exactly as the shard captions are (a missing common name falls back to the scientific name);
any other column (common names, ``"North American Luna Moth Adult"``, ``"Negative"``) is used
as written, whatever the text type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biotrove_cli.core.taxonomy.captions import caption_body
from biotrove_cli.core.taxonomy.lineage import Taxon, clean_name
from biotrove_cli.core.taxonomy.rank import Rank

#: what separates the names of a candidate cell (VLHub's ``class_options``: ``A!B``)
CANDIDATE_SEP = "!"
# "Genus epithet", then anything (an author citation, a year, a subspecies)
_SCIENTIFIC = re.compile(r"^[A-Z][a-z]+(?:-[a-z]+)? (?:x |× )?[a-z][a-z-]+(?: .*)?$")


def norm_name(name: str) -> str:
    """The form names are compared in: whitespace collapsed, case folded."""
    return " ".join(str(name).split()).casefold()


def looks_scientific(name: str) -> bool:
    """``Genus epithet`` with an optional author or infraspecific tail."""
    return bool(_SCIENTIFIC.match(clean_name(name)))


def binomial(name: str) -> str:
    """``"Amanita excelsa Gonn. & Rabenh."`` -> ``"amanita excelsa"`` (normalised); a name that
    is not scientific is returned normalised as it is."""
    text = clean_name(name)
    if not looks_scientific(text):
        return norm_name(text)
    tokens = text.split(" ")
    if tokens[1] in ("x", "×") and len(tokens) > 2:
        return norm_name(" ".join(tokens[:3]))
    return norm_name(" ".join(tokens[:2]))


def split_candidates(cell: str, sep: str = CANDIDATE_SEP) -> tuple[str, ...]:
    """The names of one candidate cell, cleaned, in order, without repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for part in str(cell or "").split(sep):
        name = clean_name(part)
        if name and norm_name(name) not in seen:
            seen.add(norm_name(name))
            out.append(name)
    return tuple(out)


@dataclass
class NameClasses:
    """Classes named by free names: display names, their taxa (scientific names) and texts.

    Attributes:
        names: the display name of each class (its first spelling).
        scientific: every name is a scientific name, so text types apply.
        taxa: per class, the taxon its texts are built from (scientific names only).
    """

    names: list[str]
    scientific: bool
    taxa: list[Taxon | None] = field(default_factory=list)
    _exact: dict[str, int] = field(default_factory=dict, repr=False)
    _by_binomial: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.taxa:
            self.taxa = [None] * len(self.names)
        self._exact = {norm_name(n): i for i, n in enumerate(self.names)}
        counts: dict[str, int] = {}
        for n in self.names:
            counts[binomial(n)] = counts.get(binomial(n), 0) + 1
        self._by_binomial = {
            binomial(n): i for i, n in enumerate(self.names) if counts[binomial(n)] == 1
        }

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        taxon_of: dict[str, Taxon] | None = None,
        scientific: bool | None = None,
    ) -> NameClasses:
        """Distinct names in first-seen order.

        Args:
            taxon_of: normalised name -> taxon, the lineage and common name of scientific
                names (a bare name otherwise).
            scientific: whether text types apply; by default, when every name is scientific.
        """
        display: list[str] = []
        seen: set[str] = set()
        for n in names:
            n = clean_name(n)
            if n and norm_name(n) not in seen:
                seen.add(norm_name(n))
                display.append(n)
        if scientific is None:
            scientific = bool(display) and all(looks_scientific(n) for n in display)
        taxa: list[Taxon | None] = []
        for n in display:
            if not scientific:
                taxa.append(None)
                continue
            known = (taxon_of or {}).get(norm_name(n))
            taxa.append(known if known is not None else Taxon.from_parts(scientific_name=n))
        return cls(names=display, scientific=scientific, taxa=taxa)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str, among: Sequence[int] | None = None) -> int:
        """The class of ``name`` (exact, else by an unambiguous binomial), or -1.

        Args:
            among: only these classes may match (a photo's candidates).
        """
        key = norm_name(clean_name(name))
        i = self._exact.get(key, -1)
        if i >= 0 and (among is None or i in among):
            return i
        if among is None:
            return self._by_binomial.get(binomial(name), -1)
        hits = [j for j in among if binomial(self.names[j]) == binomial(name)]
        return hits[0] if len(hits) == 1 else -1

    def bodies(self, text_type: str) -> list[str]:
        """The class text of every class for ``text_type`` (without the template)."""
        if not self.scientific:
            return list(self.names)
        return [caption_body(t, text_type, Rank.SPECIES) for t in self.taxa if t is not None]

    def prompts(self, text_type: str, templates: Sequence[str]) -> list[list[str]]:
        """Every class's prompts: each template filled with the class text."""
        return [[t.format(body) for t in templates] for body in self.bodies(text_type)]
