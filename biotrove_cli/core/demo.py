"""The demo's sample world: a real taxonomy (shipped), synthetic photos, BioTrove metadata.

The shipped bank ``resources/demo_species.csv`` holds 33 real species drawn from the iNat2021
categories and the Arboretum metadata: three kingdoms, ten classes, several species per genus,
and four "vulgaris" in four genera (the epithet-collision case). The photos are SYNTHETIC
(see :mod:`biotrove_cli.core.data.world`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.taxonomy.banks import BANKS
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.lineage import Taxon

DEMO_SPECIES = BANKS["demo"].path
RARE_SPECIES = 3  # species given too few photos: `shard --min-per-species` sets them aside
RARE_PHOTOS = 6
MIN_PER_SPECIES = 10
FIELD_PHOTOS = 8  # held-out photos of seen species for `classify`


@dataclass
class DemoWorld:
    root: Path
    images: Path
    metadata: Path
    photos: Path  # held-out "field photos" for classify
    species: list[Taxon]
    rare: list[Taxon]
    n_images: int


def demo_bank() -> LabelBank:
    return LabelBank.load(DEMO_SPECIES)


def pick_species(n: int) -> tuple[list[Taxon], list[Taxon]]:
    """``n`` seen species spread over the bank's kingdoms and classes, plus the rare ones.

    Species are taken round-robin over genera so that small demos still hold several kingdoms
    and classes, and genera with two or more species come first (roll-up needs them).
    """
    bank = demo_bank()
    total = len(bank.taxa)
    if not 2 <= n <= total - RARE_SPECIES:
        raise UsageError(
            f"--species must be between 2 and {total - RARE_SPECIES}, got {n}",
            hint=f"the shipped demo bank has {total} species",
        )
    by_genus: dict[str, list[Taxon]] = {}
    for t in bank.taxa:
        by_genus.setdefault(t.genus, []).append(t)
    genera = sorted(by_genus.values(), key=lambda v: (-len(v), v[0].species_key))
    order: list[Taxon] = []
    depth = 0
    while len(order) < total:
        for group in genera:
            if depth < len(group):
                order.append(group[depth])
        depth += 1
    rare = order[-RARE_SPECIES:]
    seen = order[:n]
    return seen, rare


def build_world(
    out: str | Path,
    species: int,
    images_per_species: int,
    seed: int = 0,
    size: tuple[int, int] = (320, 240),
    progress: Callable[[int, int], None] | None = None,
) -> DemoWorld:
    """Generate (or reuse) the demo photos and write their BioTrove-schema metadata."""
    from biotrove_cli.core.data.world import generate_world, render_jpeg, write_metadata
    from biotrove_cli.core.io import atomic_write_bytes, atomic_write_text

    if images_per_species < MIN_PER_SPECIES:
        raise UsageError(
            f"--images-per-species must be at least {MIN_PER_SPECIES}",
            hint="fewer photos would make every species 'rare' (unseen)",
        )
    root = Path(out)
    seen, rare = pick_species(species)
    images = root / "images"
    photos = generate_world(
        seen + rare,
        images,
        seed=seed,
        size=size,
        images_per_species=lambda t: RARE_PHOTOS if t in rare else images_per_species,
        progress=progress,
    )
    metadata = write_metadata(photos, root / "metadata.parquet")
    # held-out photos of seen species (new indices, never in the shards), named like a camera's
    field = root / "photos"
    field.mkdir(parents=True, exist_ok=True)
    picks = seen[:: max(1, len(seen) // FIELD_PHOTOS)][:FIELD_PHOTOS]
    truth = ["file,scientific_name,common_name"]
    for i, t in enumerate(picks):
        target = field / f"IMG_{i + 1:04d}.jpg"
        if not target.exists():
            atomic_write_bytes(target, render_jpeg(t, 10_000 + i, seed=seed, size=(500, 375)))
        truth.append(f"{target.name},{t.binomial},{t.common_name}")
    atomic_write_text(root / "photos-truth.csv", "\n".join(truth) + "\n")
    return DemoWorld(
        root=root,
        images=images,
        metadata=metadata,
        photos=field,
        species=seen,
        rare=rare,
        n_images=len(photos),
    )
