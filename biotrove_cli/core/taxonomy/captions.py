"""Caption builders for every BioTrove text type, with the BioTrove templates exactly.

K..S below are the seven rank names joined by spaces with the species as its epithet, as in
BioTrove's ``gen_img_txt_pair.py``; ``sci`` is the scientific name. A missing common name falls
back to the scientific name, and empty ranks are dropped rather than printed as blanks.
"""

from __future__ import annotations

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

TEXT_TYPES: tuple[str, ...] = (
    "com",
    "common_name",
    "sci",
    "sci_com",
    "scientific_name",
    "taxon",
    "taxonTag",
    "taxonTag_com",
    "taxon_com",
    "taxonomic_name",
)

#: The five types the BioTrove/BioCLIP trainer chooses from with ``--text_type random``,
#: in the order of its ``random.choice([sci, com, taxon, sci_com, taxon_com])``.
REFERENCE_RANDOM_TYPES: tuple[str, ...] = ("sci", "com", "taxon", "sci_com", "taxon_com")

#: The default ``{key}.txt`` caption of a shard: stock open_clip trains on it unchanged.
DEFAULT_CAPTION = "taxon_com"


def check_text_type(text_type: str) -> str:
    """Return the canonical text type (case-insensitive match) or raise a usage error."""
    for t in TEXT_TYPES:
        if t.lower() == str(text_type).strip().lower():
            return t
    raise UsageError(
        f"unknown text type {text_type!r}",
        hint="use one of: " + ", ".join(TEXT_TYPES),
    )


def _common(taxon: Taxon) -> str:
    return taxon.common_name or taxon.sci


def _tagged(taxon: Taxon, upto: Rank = Rank.SPECIES) -> str:
    return " ".join(
        f"{rank.value} {name}"
        for rank, name in zip(RANKS[: upto.index + 1], taxon.names, strict=False)
        if name
    )


def caption_body(taxon: Taxon, text_type: str, rank: Rank = Rank.SPECIES) -> str:
    """The class text of ``taxon`` at ``rank`` for ``text_type``, without "a photo of" and ".".

    At species rank this is exactly the inside of the training caption, so the prompt
    "a photo of {body}." reproduces it; at higher ranks the lineage is cut at ``rank`` and the
    species-only parts (epithet, common name) are left out.
    """
    text_type = check_text_type(text_type)
    species = rank is Rank.SPECIES
    if text_type in ("taxon", "taxonomic_name"):
        return taxon.taxon_string(rank)
    if text_type == "taxonTag":
        return _tagged(taxon, rank)
    if not species:
        if text_type in ("taxon_com",):
            return taxon.taxon_string(rank)
        if text_type == "taxonTag_com":
            return _tagged(taxon, rank)
        return taxon.name_at(rank)
    if text_type in ("sci", "scientific_name"):
        return taxon.sci
    if text_type in ("com", "common_name"):
        return _common(taxon)
    if text_type == "sci_com":
        return f"{taxon.sci} with common name {_common(taxon)}"
    if text_type == "taxon_com":
        return f"{taxon.taxon_string()} with common name {_common(taxon)}"
    if text_type == "taxonTag_com":
        return f"{_tagged(taxon)} with common name {_common(taxon)}"
    raise AssertionError(text_type)  # pragma: no cover - check_text_type covers every type


def build_caption(taxon: Taxon, text_type: str) -> str:
    """The BioTrove caption of one text type, e.g. ``taxon`` -> "a photo of K P C O F G S."."""
    text_type = check_text_type(text_type)
    body = caption_body(taxon, text_type)
    if text_type in ("common_name", "scientific_name", "taxonomic_name"):
        return f"{body}."
    return f"a photo of {body}."


def build_captions(
    taxon: Taxon, text_types: tuple[str, ...] | list[str] = TEXT_TYPES
) -> dict[str, str]:
    """Every requested caption of one taxon, keyed by text type."""
    return {t: build_caption(taxon, t) for t in text_types}
