"""The synthetic sample world: deterministic, lineage-structured, real JPEG files."""

from __future__ import annotations

import hashlib

from PIL import Image

from biotrove_cli.core.data.world import generate_world, render, signature
from biotrove_cli.core.taxonomy.rank import Rank


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.jpg")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_files(tmp_path, demo_bank):
    taxa = demo_bank.taxa[:4]
    a = generate_world(taxa, tmp_path / "a", images_per_species=3, seed=5)
    b = generate_world(taxa, tmp_path / "b", images_per_species=3, seed=5)
    generate_world(taxa, tmp_path / "c", images_per_species=3, seed=6)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert [w.photo_id for w in a] == [w.photo_id for w in b] == [str(i) for i in range(12)]


def test_files_look_like_field_photos(tmp_path, demo_bank):
    photos = generate_world(demo_bank.taxa[:10], tmp_path, images_per_species=5, seed=0)
    sizes = set()
    for w in photos:
        with Image.open(w.path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            sizes.add(im.size)
    assert (500, 375) in sizes and len(sizes) >= 3  # varied, mostly iNaturalist "medium"
    # generating again skips the files that exist (resumable demos)
    again = generate_world(demo_bank.taxa[:10], tmp_path, images_per_species=5, seed=0)
    assert [w.path for w in again] == [w.path for w in photos]


def test_related_species_look_related(demo_bank):
    by_genus = {}
    for t in demo_bank.taxa:
        by_genus.setdefault(t.key_at(Rank.GENUS), []).append(t)
    a, b = next(v for v in by_genus.values() if len(v) >= 2)[:2]
    sa, sb = signature(a), signature(b)
    # same genus: same body plan, texture, colours and pattern; the species detail differs
    assert (sa.shape, sa.lobes, sa.texture, sa.secondary_hue, sa.pattern_angle) == (
        sb.shape,
        sb.lobes,
        sb.texture,
        sb.secondary_hue,
        sb.pattern_angle,
    )
    assert (sa.accent_hue, sa.accent_spots) != (sb.accent_hue, sb.accent_spots)
    plant = next(t for t in demo_bank.taxa if t.kingdom == "Plantae")
    animal = next(t for t in demo_bank.taxa if t.kingdom == "Animalia")
    assert abs(signature(plant).hue - signature(animal).hue) > 0.15


def test_per_image_variation(demo_bank):
    t = demo_bank.taxa[0]
    one, two = render(t, 0, size=(128, 96)), render(t, 1, size=(128, 96))
    assert one.size == two.size == (128, 96)
    assert one.tobytes() != two.tobytes()
