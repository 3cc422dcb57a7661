"""The sample world: deterministic synthetic "field photos" for any label bank.

These images are SYNTHETIC. They exist so that demos, tests and benchmarks can run the whole
pipeline offline with real JPEG files on disk. Each species gets a visual signature derived from
its lineage, so related species look related:

* kingdom -> the colour palette (base hue) of the organism;
* phylum  -> the body plan (ellipse, polygon, star, cross, crescent, leaf);
* class   -> the number of lobes/vertices;
* order   -> the surface texture (stripes, dots, rings, plain, chequer);
* family  -> the secondary colour;
* genus   -> the pattern's angle and spacing;
* species -> a fine detail: accent colour, count and place of accent spots.

Per image, position, scale, rotation, background, lighting and sensor noise vary, and the
sizes vary like real uploads (mostly about 500x375, some portrait, some large).
Everything is a pure function of (seed, species key, image index): two runs with the same seed
write byte-identical files.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from biotrove_cli.core.taxonomy.lineage import Taxon
from biotrove_cli.core.taxonomy.rank import Rank

SHAPES = ("ellipse", "polygon", "star", "cross", "crescent", "leaf")
TEXTURES = ("stripes", "dots", "rings", "plain", "chequer")
# (width, height) choices and their weights: iNaturalist "medium" photos are about 500x375
SIZES = (((500, 375), 10), ((375, 500), 3), ((500, 333), 3), ((640, 480), 2), ((1600, 1200), 1))
JPEG_QUALITY = 90
# kingdoms are few and must look apart: fixed palettes for the common ones, a hash for others
KINGDOM_HUES = {
    "animalia": 0.02,
    "plantae": 0.33,
    "fungi": 0.78,
    "chromista": 0.55,
    "protozoa": 0.62,
    "bacteria": 0.9,
    "archaea": 0.45,
}


def _h(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _unit(*parts: object) -> float:
    return _h(*parts) / 2**64


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class Signature:
    """The visual traits of one species, derived from its lineage."""

    hue: float
    shape: str
    lobes: int
    texture: str
    secondary_hue: float
    pattern_angle: float
    pattern_period: float
    accent_hue: float
    accent_spots: int
    accent_angle: float


def signature(taxon: Taxon) -> Signature:
    """The species' traits: each rank's key sets the traits of that rank."""
    k = taxon.key_at(Rank.KINGDOM) or "?"
    p = taxon.key_at(Rank.PHYLUM) or k
    c = taxon.key_at(Rank.CLASS) or p
    o = taxon.key_at(Rank.ORDER) or c
    f = taxon.key_at(Rank.FAMILY) or o
    g = taxon.key_at(Rank.GENUS) or f
    s = taxon.species_key or taxon.binomial or g
    hue = KINGDOM_HUES.get(k, _unit("kingdom", k))
    return Signature(
        hue=hue + 0.08 * (_unit("phylum-hue", p) - 0.5),
        shape=SHAPES[_h("phylum", p) % len(SHAPES)],
        lobes=3 + _h("class", c) % 6,
        texture=TEXTURES[_h("order", o) % len(TEXTURES)],
        secondary_hue=_unit("family", f),
        pattern_angle=math.pi * _unit("genus-angle", g),
        pattern_period=0.12 + 0.16 * _unit("genus-period", g),
        accent_hue=_unit("species-hue", s),
        accent_spots=1 + _h("species-spots", s) % 4,
        accent_angle=2 * math.pi * _unit("species-angle", s),
    )


def _body_polygon(
    sig: Signature, cx: float, cy: float, r: float, rot: float
) -> list[tuple[float, float]]:
    n = 96
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        if sig.shape == "ellipse":
            rr = r * (1.0 + 0.08 * math.cos(sig.lobes * t))
            x, y = rr * math.cos(t), 0.62 * rr * math.sin(t)
        elif sig.shape == "polygon":
            k = sig.lobes
            seg = math.pi / k
            rr = r * math.cos(seg) / math.cos((t % (2 * seg)) - seg)
            x, y = rr * math.cos(t), rr * math.sin(t)
        elif sig.shape == "star":
            rr = r * (0.55 + 0.45 * abs(math.cos(sig.lobes * t / 2)) ** 3)
            x, y = rr * math.cos(t), rr * math.sin(t)
        elif sig.shape == "cross":
            rr = r * (0.45 + 0.55 * abs(math.cos(sig.lobes * t / 2)) ** 12)
            x, y = rr * math.cos(t), rr * math.sin(t)
        elif sig.shape == "crescent":
            rr = r * (0.75 + 0.25 * math.sin(t) + 0.05 * math.cos(sig.lobes * t))
            x, y = rr * math.cos(t), rr * math.sin(t) * (0.5 + 0.5 * abs(math.cos(t)))
        else:  # leaf
            rr = r * (0.35 + 0.65 * abs(math.sin(t)) ** 0.6) * (1 + 0.06 * math.cos(sig.lobes * t))
            x, y = 0.7 * rr * math.cos(t), rr * math.sin(t)
        xr = x * math.cos(rot) - y * math.sin(rot)
        yr = x * math.sin(rot) + y * math.cos(rot)
        pts.append((cx + xr, cy + yr))
    return pts


def render(taxon: Taxon, index: int, seed: int = 0, size: tuple[int, int] | None = None):
    """Render one synthetic photo of ``taxon`` (a PIL RGB image)."""
    from PIL import Image, ImageDraw, ImageFilter

    sig = signature(taxon)
    key = taxon.species_key or taxon.binomial
    rnd = random.Random(f"{seed}:{key}:{index}")
    if size is None:
        choices = [s for s, _ in SIZES]
        weights = [w for _, w in SIZES]
        size = rnd.choices(choices, weights=weights)[0]
    w, h = size
    # work at a moderate resolution, then scale: keeps large photos cheap to make
    scale = min(1.0, 520.0 / max(w, h))
    ww, hh = max(16, int(w * scale)), max(16, int(h * scale))
    canvas = _background(rnd, ww, hh)

    # the organism
    r = rnd.uniform(0.26, 0.38) * min(ww, hh)
    cx = ww / 2 + rnd.uniform(-0.18, 0.18) * ww
    cy = hh / 2 + rnd.uniform(-0.15, 0.15) * hh
    rot = rnd.uniform(0, 2 * math.pi)
    light = rnd.uniform(0.8, 1.1)
    base = _rgb(sig.hue, 0.75, 0.85 * light)
    second = _rgb(sig.secondary_hue, 0.8, 0.95 * light)
    mask = Image.new("L", (ww, hh), 0)
    ImageDraw.Draw(mask).polygon(_body_polygon(sig, cx, cy, r, rot), fill=255)

    body = Image.new("RGB", (ww, hh), base)
    tex = Image.new("L", (ww, hh), 0)
    _draw_texture(ImageDraw.Draw(tex), sig, cx, cy, r, rot)
    body.paste(Image.new("RGB", (ww, hh), second), (0, 0), tex)
    _draw_accents(ImageDraw.Draw(body), sig, cx, cy, r, rot, light)
    canvas.paste(body, (0, 0), mask)
    outline = mask.filter(ImageFilter.FIND_EDGES)
    canvas.paste(Image.new("RGB", (ww, hh), (25, 25, 25)), (0, 0), outline)
    return _camera(canvas, rnd, (seed, key, index), (w, h))


def _background(rnd: random.Random, ww: int, hh: int):
    """A nuisance gradient of an unrelated hue, plus blotches."""
    import numpy as np
    from PIL import Image, ImageDraw

    bg_hue = rnd.random()
    top = _rgb(bg_hue, 0.25 + 0.3 * rnd.random(), 0.35 + 0.4 * rnd.random())
    bottom = _rgb(bg_hue + 0.1 * rnd.random(), 0.2 + 0.3 * rnd.random(), 0.25 + 0.4 * rnd.random())
    ramp = np.linspace(0.0, 1.0, hh, dtype=np.float32)[:, None, None]
    bg = (1 - ramp) * np.array(top, np.float32) + ramp * np.array(bottom, np.float32)
    canvas = Image.fromarray(np.broadcast_to(bg, (hh, ww, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(rnd.randint(2, 6)):
        bx, by = rnd.uniform(0, ww), rnd.uniform(0, hh)
        br = rnd.uniform(0.05, 0.2) * min(ww, hh)
        col = _rgb(bg_hue + rnd.uniform(-0.15, 0.15), rnd.uniform(0.1, 0.4), rnd.uniform(0.2, 0.7))
        draw.ellipse((bx - br, by - br, bx + br, by + br), fill=col)
    return canvas


def _draw_texture(td, sig: Signature, cx: float, cy: float, r: float, rot: float) -> None:
    """The body's pattern (the genus's texture at the species' period and angle) as a mask."""
    period = max(3.0, sig.pattern_period * r * 2)
    ang = sig.pattern_angle + rot
    ca, sa = math.cos(ang), math.sin(ang)
    if sig.texture == "stripes":
        for k in range(-int(3 * r / period) - 2, int(3 * r / period) + 3):
            ox, oy = cx + k * period * ca, cy + k * period * sa
            half = period * 0.3
            pts = [
                (ox - half * ca - 3 * r * sa, oy - half * sa + 3 * r * ca),
                (ox + half * ca - 3 * r * sa, oy + half * sa + 3 * r * ca),
                (ox + half * ca + 3 * r * sa, oy + half * sa - 3 * r * ca),
                (ox - half * ca + 3 * r * sa, oy - half * sa - 3 * r * ca),
            ]
            td.polygon(pts, fill=255)
    elif sig.texture == "dots":
        n = int(2 * r / period) + 2
        for i in range(-n, n + 1):
            for j in range(-n, n + 1):
                ox = cx + (i * ca - j * sa) * period
                oy = cy + (i * sa + j * ca) * period
                dr = period * 0.28
                td.ellipse((ox - dr, oy - dr, ox + dr, oy + dr), fill=255)
    elif sig.texture == "rings":
        k = r
        while k > period * 0.5:
            td.ellipse(
                (cx - k, cy - k, cx + k, cy + k), outline=255, width=max(1, int(period * 0.3))
            )
            k -= period
    elif sig.texture == "chequer":
        n = int(2 * r / period) + 2
        for i in range(-n, n + 1):
            for j in range(-n, n + 1):
                if (i + j) % 2:
                    continue
                corners = []
                for di, dj in ((0, 0), (1, 0), (1, 1), (0, 1)):
                    corners.append(
                        (
                            cx + ((i + di) * ca - (j + dj) * sa) * period,
                            cy + ((i + di) * sa + (j + dj) * ca) * period,
                        )
                    )
                td.polygon(corners, fill=255)


def _draw_accents(
    ad, sig: Signature, cx: float, cy: float, r: float, rot: float, light: float
) -> None:
    """Species detail: accent spots of the species' own colour."""
    accent = _rgb(sig.accent_hue, 0.9, 1.0 * light)
    spot_r = r * 0.2
    for i in range(sig.accent_spots):
        t = sig.accent_angle + rot + 2 * math.pi * i / sig.accent_spots
        d = r * 0.45 if sig.accent_spots > 1 else 0.0
        sx, sy = cx + d * math.cos(t), cy + d * math.sin(t)
        ad.ellipse(
            (sx - spot_r, sy - spot_r, sx + spot_r, sy + spot_r),
            fill=accent,
            outline=(20, 20, 20),
            width=max(1, int(spot_r * 0.15)),
        )


def _camera(canvas, rnd: random.Random, noise_key: tuple, size: tuple[int, int]):
    """Slight blur, sensor noise, then the final size and, sometimes, a colour cast."""
    import numpy as np
    from PIL import Image, ImageChops, ImageFilter

    w, h = size
    hh, ww = canvas.size[1], canvas.size[0]
    if rnd.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius=rnd.uniform(0.3, 1.2)))
    rng = np.random.default_rng(_h("noise", *noise_key))
    noise = rng.normal(0.0, rnd.uniform(3.0, 9.0), size=(hh, ww, 3)).astype(np.float32)
    arr = np.clip(np.asarray(canvas, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(arr, "RGB")
    if (ww, hh) != (w, h):
        canvas = canvas.resize((w, h), Image.BILINEAR)
    if rnd.random() < 0.5:
        canvas = ImageChops.multiply(canvas, Image.new("RGB", (w, h), _rgb(0.1, 0.1, 1.0)))
    return canvas


def render_jpeg(
    taxon: Taxon,
    index: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    quality: int = JPEG_QUALITY,
) -> bytes:
    buf = io.BytesIO()
    render(taxon, index, seed=seed, size=size).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass(frozen=True)
class WorldImage:
    """One generated photo: where it is, what it shows, and its photo id."""

    path: Path
    taxon: Taxon
    index: int
    photo_id: str


def generate_world(
    taxa: Iterable[Taxon],
    out_dir: str | Path,
    images_per_species: int | Callable[[Taxon], int],
    seed: int = 0,
    size: tuple[int, int] | None = None,
    id_offset: int = 0,
    progress: Callable[[int, int], None] | None = None,
    layout: str = "flat",
) -> list[WorldImage]:
    """Write JPEG photos for each taxon under ``out_dir``; skip files that already exist.

    Args:
        images_per_species: a count, or a function giving each species its count.
        layout: ``flat`` writes ``{photo_id}.jpg``; ``species`` writes ``Genus_epithet/{id}.jpg``.
        id_offset: first photo id (ids are consecutive integers, like iNaturalist photo ids).

    Returns:
        The generated images, in a deterministic order.
    """
    from biotrove_cli.core.io import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taxa = list(taxa)
    counts = [
        images_per_species(t) if callable(images_per_species) else images_per_species for t in taxa
    ]
    total = sum(counts)
    done = 0
    images: list[WorldImage] = []
    pid = id_offset
    for taxon, n in zip(taxa, counts, strict=True):
        for i in range(n):
            photo_id = str(pid)
            pid += 1
            if layout == "species":
                folder = out / taxon.binomial.replace(" ", "_")
                path = folder / f"{photo_id}.jpg"
            else:
                path = out / f"{photo_id}.jpg"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, render_jpeg(taxon, i, seed=seed, size=size))
            images.append(WorldImage(path=path, taxon=taxon, index=i, photo_id=photo_id))
            done += 1
            if progress is not None:
                progress(done, total)
    return images


def biotrove_table(rows: Iterable[tuple[object, Taxon, str]]):
    """A pyarrow table in the BioTrove/Arboretum schema from (photo_id, taxon, photo_url) rows;
    ``species`` holds the epithet, as in the real files."""
    import pyarrow as pa

    from biotrove_cli.core.taxonomy.rank import RANKS
    from biotrove_cli.core.taxonomy.readers import BIOTROVE_COLUMNS

    cols: dict[str, list] = {k: [] for k in BIOTROVE_COLUMNS}
    for photo_id, t, url in rows:
        cols["photo_id"].append(photo_id)
        cols["scientificName"].append(t.scientific_name)
        for rank, name in zip(RANKS, t.names, strict=True):
            cols[rank.value].append(name)
        cols["common_name"].append(t.common_name)
        cols["photo_url"].append(url)
    return pa.table(cols)


def write_metadata(photos: Iterable[WorldImage], path: str | Path, url_base: str = "") -> Path:
    """BioTrove-schema metadata (Parquet) for generated photos, as the real Arboretum files:
    photo_id, scientificName, kingdom..species (epithet), common_name, photo_url."""
    from biotrove_cli.core.io import atomic_write_parquet

    rows = (
        (int(p.photo_id), p.taxon, f"{url_base}{p.photo_id}.jpg" if url_base else "")
        for p in photos
    )
    return atomic_write_parquet(biotrove_table(rows), path)
