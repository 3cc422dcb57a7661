"""What ``biotrove shard`` is asked to do: :class:`ShardConfig` and the parsers of its
text flags (``--part K/N``, ``--max-shard-bytes``, ``--captions``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION, TEXT_TYPES, check_text_type

RESIZE_MODES = ("keep_ratio_largest", "center_crop", "keep", "none")


@dataclass
class ShardConfig:
    """Everything ``biotrove shard`` needs. Fields that shape the dataset enter its fingerprint."""

    metadata: list[Path] = field(default_factory=list)
    images: Path = Path("images")
    out: Path = Path("shards")
    categories: list[str] = field(default_factory=list)
    min_per_species: int = 0
    max_per_species: int = 0
    seed: int = 0
    val_fraction: float = 0.0
    image_size: int = 224
    resize_mode: str = "keep_ratio_largest"
    jpeg_quality: int = 95
    caption: str = DEFAULT_CAPTION
    captions: list[str] = field(default_factory=lambda: list(TEXT_TYPES))
    samples_per_shard: int = 1000
    max_shard_bytes: int = 0
    workers: int = 0
    part: tuple[int, int] = (1, 1)
    strict: bool = False
    download: bool = False
    download_workers: int = 8
    download_timeout: float = 30.0
    download_retries: int = 3

    def validate(self) -> list[str]:
        problems: list[str] = []
        if not self.metadata:
            problems.append("no metadata file given")
        if self.min_per_species < 0:
            problems.append("--min-per-species must be >= 0")
        if self.max_per_species < 0:
            problems.append("--max-per-species must be >= 0 (0 = no cap)")
        if self.max_per_species and self.max_per_species < self.min_per_species:
            problems.append(
                f"--max-per-species {self.max_per_species} is below --min-per-species "
                f"{self.min_per_species}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.image_size < 8:
            problems.append(f"--image-size must be >= 8, got {self.image_size}")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(
                f"--resize-mode {self.resize_mode!r}: use one of {', '.join(RESIZE_MODES)}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
        if self.samples_per_shard < 1:
            problems.append("--samples-per-shard must be >= 1")
        if self.max_shard_bytes < 0:
            problems.append("--max-shard-bytes must be >= 0 (0 = no limit)")
        k, n = self.part
        if not (n >= 1 and 1 <= k <= n):
            problems.append(f"--part {k}/{n}: K must be in 1..N")
        for name in (self.caption, *self.captions):
            try:
                check_text_type(name)
            except UsageError:
                problems.append(f"unknown caption type {name!r} (use {', '.join(TEXT_TYPES)})")
        if self.download_workers < 1:
            problems.append("--download-workers must be >= 1")
        if self.download_timeout <= 0:
            problems.append("--download-timeout must be > 0")
        if self.download_retries < 0:
            problems.append("--download-retries must be >= 0")
        return problems

    def dataset_args(self) -> dict[str, Any]:
        """The arguments that decide what the dataset holds (they enter the fingerprint)."""
        return {
            "categories": sorted({c.strip().lower() for c in self.categories if c.strip()}),
            "min_per_species": self.min_per_species,
            "max_per_species": self.max_per_species,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "image_size": self.image_size,
            "resize_mode": self.resize_mode,
            "jpeg_quality": self.jpeg_quality,
            "caption": check_text_type(self.caption),
            "captions": [check_text_type(c) for c in self.captions],
            "samples_per_shard": self.samples_per_shard,
            "max_shard_bytes": self.max_shard_bytes,
        }


def parse_part(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8); a usage error otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise UsageError(
            f"--part {text!r}: expected K/N with 1 <= K <= N (e.g. 3/8)",
            hint="in a SLURM array: --part $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT",
        )
    return int(m.group(1)), int(m.group(2))


_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(text: str) -> int:
    """``"500MB"``, ``"1.5G"``, ``"1GiB"``, ``"123456"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(i?)b?\s*", str(text).lower())
    if not m:
        raise UsageError(
            f"not a size: {text!r}", hint="use bytes or a unit, e.g. 500MB, 1G, 2GiB, 0 (no limit)"
        )
    base = 1024 ** "bkmgt".index(m.group(2) or "b") if m.group(3) else _SIZE_UNITS[m.group(2)]
    return int(float(m.group(1)) * base)


def parse_captions(text: str) -> list[str]:
    """``all`` or a comma list of BioTrove text types -> canonical names (usage error if bad)."""
    value = str(text).strip()
    if value.lower() in ("all", "*"):
        return list(TEXT_TYPES)
    if value.lower() in ("none", ""):
        return []
    out: list[str] = []
    for part in value.split(","):
        if part.strip():
            name = check_text_type(part)
            if name not in out:
                out.append(name)
    return out
