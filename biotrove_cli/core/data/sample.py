"""The shard sample format: how ``biotrove shard`` writes a sample and how everything reads it
back (one owner).

Each sample in a tar: ``{key}.jpg``, ``{key}.txt`` (the default caption), one
``{key}.{type}.txt`` per BioTrove text type, and ``{key}.json`` (lineage, species key, photo id,
source, original size). Keys never contain dots or slashes, so stock webdataset/open_clip group
the files by key as they are.

Read back (:func:`biotrove_cli.core.data.shards.read_shard`, or webdataset), a sample is a dict of
member extension -> bytes: ``{"__key__": key, "jpg": ..., "txt": ..., "taxon.txt": ...,
"json": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from biotrove_cli.core.data.images import WEB_IMAGE_SUFFIXES
from biotrove_cli.core.taxonomy.captions import build_caption
from biotrove_cli.core.taxonomy.lineage import Taxon

IMAGE = "jpg"  # the image member biotrove writes
CAPTION = "txt"  # the default caption, what stock open_clip trains on
META = "json"
#: Image members a sample may hold, in the order they are looked for (shards written by other
#: tools may carry a png or webp instead of a jpg).
IMAGE_EXTS = tuple(s.lstrip(".") for s in WEB_IMAGE_SUFFIXES)

_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY = 80  # + the longest suffix (.taxonTag_com.txt) fits a 100-byte tar name


# -- keys -------------------------------------------------------------------------------------
def sanitize_key(text: str) -> str:
    """A key webdataset groups correctly: letters, digits, ``_`` and ``-`` only.

    Dots (webdataset splits the extension at the first dot), slashes and ``..`` become ``_``.
    Over-long keys keep their start and get a short hash, so they stay distinct.
    """
    key = _KEY_BAD.sub("_", str(text)).strip("_")
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:12]
        key = f"{key[: MAX_KEY - 13]}_{digest}"
    return key


def caption_key(text_type: str) -> str:
    """The member extension of a caption: ``txt`` (the default) or ``{type}.txt``."""
    return CAPTION if text_type == CAPTION else f"{text_type}.{CAPTION}"


# -- writing ----------------------------------------------------------------------------------
def caption_members(
    taxon: Taxon, caption: str, captions: tuple[str, ...]
) -> list[tuple[str, bytes]]:
    """(extension, text) of a taxon's captions: the default ``caption`` as ``txt``, then one
    ``{type}.txt`` per text type of ``captions``."""
    texts = [(CAPTION, build_caption(taxon, caption).encode())]
    texts += [(caption_key(c), build_caption(taxon, c).encode()) for c in captions]
    return texts


def taxon_fields(taxon: Taxon) -> dict[str, Any]:
    """The ``.json`` fields that depend only on the taxon (:func:`taxon_from_meta` reads them)."""
    return {
        "species_key": taxon.species_key,
        "scientific_name": taxon.scientific_name,
        "common_name": taxon.common_name,
        "epithet": taxon.epithet,
        "lineage": taxon.lineage_dict(),
    }


def make_meta(
    key: str,
    photo_id: str,
    fields: dict[str, Any],
    split: str,
    source: str,
    url: str,
    original_size: tuple[int, int],
    size: tuple[int, int],
) -> dict[str, Any]:
    """A sample's ``.json``: its key and photo, the :func:`taxon_fields`, where it came from and
    its original and stored (width, height)."""
    return {
        "key": key,
        "photo_id": photo_id,
        **fields,
        "split": split,
        "source": source,
        "url": url,
        "original_size": list(original_size),
        "size": list(size),
    }


def sample_members(
    key: str, image: bytes, captions: list[tuple[str, bytes]], meta: dict[str, Any]
) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in the order they are written."""
    members = [(f"{key}.{IMAGE}", image)]
    members += [(f"{key}.{ext}", text) for ext, text in captions]
    members.append((f"{key}.{META}", json.dumps(meta, ensure_ascii=False).encode()))
    return members


# -- reading ----------------------------------------------------------------------------------
def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's ``.json`` as a dict (empty when missing or unreadable)."""
    raw = sample.get(META)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}


def taxon_from_meta(meta: dict[str, Any]) -> Taxon:
    """The sample's Taxon from its ``.json`` (as written by ``biotrove shard``)."""
    lin = meta.get("lineage") or {}
    return Taxon.from_parts(
        lin.get("kingdom", ""),
        lin.get("phylum", ""),
        lin.get("class", ""),
        lin.get("order", ""),
        lin.get("family", ""),
        lin.get("genus", ""),
        meta.get("epithet") or lin.get("species", ""),
        scientific_name=meta.get("scientific_name", ""),
        common_name=meta.get("common_name", ""),
    )


def sample_image_bytes(sample: dict[str, Any]) -> bytes | None:
    """The sample's encoded image, or None when it has none."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


def caption_of(sample: dict[str, Any], text_type: str) -> str | None:
    """The sample's caption of ``text_type`` (``txt`` = the default one); None when missing."""
    raw = sample.get(caption_key(text_type))
    if raw is None:
        return None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
