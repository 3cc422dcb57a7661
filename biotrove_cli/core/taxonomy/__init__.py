"""Taxonomy: ranks, lineage records and species keys, metadata readers, captions, label banks."""

from biotrove_cli.core.taxonomy.captions import TEXT_TYPES, build_caption, build_captions
from biotrove_cli.core.taxonomy.lineage import Taxon, clean_name
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

__all__ = ["RANKS", "Rank", "TEXT_TYPES", "Taxon", "build_caption", "build_captions", "clean_name"]
