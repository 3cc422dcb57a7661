"""Benchmark ``biotrove report`` on a card of 10,000 photos: build time, file size, and the page's
time to interactive and response to a sort and a filter in headless Chromium.

    python benchmarks/bench_report.py [--cache DIR] [--photos 10000] [--unique 1000]
                                      [--thumb-size 160] [--no-browser]

The photos are generated once (``core/data/world.py``, 500x375 JPEGs like iNaturalist "medium"
photos) and kept in the cache folder: ``--unique`` distinct files, each hard-linked under
several names up to ``--photos`` (every name is decoded and thumbnailed on its own; the links
only save disk). ``biotrove classify`` (the tiny model with seeded random weights, the demo
bank, top 5) classifies the distinct files once; its records are repeated for the other names.

Printed, each with the command's own baseline measured in this process:

* thumbnails per second, against a naive thumbnail (full decode, then ``Image.thumbnail``) of
  the same photos in one thread;
* the file's size, per photo;
* in Chromium: the time from navigation to the page's ready mark (time to interactive), against
  the same page with the first 100 photos; a sort (least confident first) and a taxon filter,
  each re-rendering the first page of cards; showing 960 cards at once.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def photos(cache: Path, n: int, unique: int) -> Path:
    """``cache/card`` with ``n`` photo names over ``unique`` distinct files."""
    from biotrove_cli.core.data.world import generate_world
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    src = cache / "unique"
    if len(list(src.glob("*.jpg"))) < unique:
        bank = LabelBank.load("demo")
        t0 = time.perf_counter()
        generate_world(bank.taxa, src, -(-unique // len(bank.taxa)), seed=0, size=(500, 375))
        print(f"generated photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    files = sorted(src.glob("*.jpg"))[:unique]
    card = cache / f"card-{n}"
    if not card.is_dir():
        card.mkdir(parents=True)
        for i in range(n):
            os.link(files[i % len(files)], card / f"IMG_{i:05d}.jpg")
    return card


def classify(cache: Path, card: Path, n: int, unique: int) -> Path:
    """The classify CSV of the card: the distinct photos classified, the rest repeated."""
    out = cache / f"card-{n}.csv"
    if out.is_file():
        return out
    first = cache / "unique.csv"
    names = sorted(card.iterdir())
    if not first.is_file():
        listing = "\n".join(str(p) for p in names[:unique]) + "\n"
        subprocess.run(
            [sys.executable, "-m", "biotrove_cli", "-q", "classify", "-", "-m",
             "biotrove-tiny:random", "--labels", "demo", "-k", "5", "-o", str(first)],
            input=listing, text=True, check=True, cwd=REPO,
        )  # fmt: skip
    rows = list(csv.DictReader(first.open(newline="")))
    by_photo: dict[str, list[dict]] = {}
    for r in rows:
        by_photo.setdefault(r["path"], []).append(r)
    ordered = [by_photo[str(p)] for p in names[:unique]]
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for i, p in enumerate(names):
            for r in ordered[i % unique]:
                w.writerow({**r, "path": str(p)})
    return out


def naive_thumbnails(paths: list[Path], size: int) -> float:
    """Seconds per photo: full decode and ``Image.thumbnail``, one thread."""
    import io

    from PIL import Image, ImageOps

    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im.convert("RGB"))
            im.thumbnail((size, size))
            im.save(io.BytesIO(), format="JPEG", quality=70)
    return (time.perf_counter() - t0) / len(paths)


def browser(page_file: Path, small_file: Path) -> None:
    from tests.browser import Chromium, find_chromium

    exe = find_chromium()
    if exe is None:
        print("no Chromium: page timings skipped")
        return
    mark = "performance.getEntriesByName('report-ready')[0].startTime"
    with Chromium(exe, timeout=300) as b:
        results = {}
        for name, f in (("100 photos", small_file), ("all photos", page_file)):
            page = b.new_page(1280, 900)
            t0 = time.perf_counter()
            page.goto(f.as_uri())
            wall = time.perf_counter() - t0
            results[name] = (page.eval(mark), wall)
        small, full = results["100 photos"], results["all photos"]
        print(f"time to interactive: {full[0]:.0f} ms (load + parse + first page; "
              f"{full[1]:.1f} s wall incl. navigation) vs {small[0]:.0f} ms for 100 photos: "
              f"x{full[0] / small[0]:.1f}")  # fmt: skip
        timed = "(() => { const t = performance.now(); %s; return performance.now() - t; })()"
        sort = page.eval(timed % "document.querySelector('[data-sort=asc]').click()")
        filt = page.eval(
            timed % "const f = document.querySelector('form.filters'); f.elements.taxon.value = "
            "'turdus'; f.dispatchEvent(new Event('submit', {cancelable: true}))"
        )
        shown = page.eval("document.querySelector('.gallery').dataset.shown")
        many = page.eval(
            timed
            % "const f = document.querySelector('form.filters'); f.elements.taxon.value = ''; "
            "f.elements.per.value = '960'; f.dispatchEvent(new Event('submit', {cancelable: "
            "true}))"
        )
        print(f"sort, least confident first, over all photos: {sort:.0f} ms")
        print(f"taxon filter 'turdus' ({shown} photos match): {filt:.0f} ms")
        print(f"960 cards on one page: {many:.0f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "biotrove-bench-report"
    )
    ap.add_argument("--photos", type=int, default=10_000)
    ap.add_argument("--unique", type=int, default=1_000)
    ap.add_argument("--thumb-size", type=int, default=160)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("BIOTROVE_HOME", str(args.cache / "home"))
    from biotrove_cli.core.report.build import ReportConfig, build_report
    from biotrove_cli.core.report.sources import read_source
    from biotrove_cli.output.report.page import write_report

    args.cache.mkdir(parents=True, exist_ok=True)
    card = photos(args.cache, args.photos, min(args.unique, args.photos))
    results = classify(args.cache, card, args.photos, min(args.unique, args.photos))
    per_naive = naive_thumbnails(sorted(card.iterdir())[:200], args.thumb_size)

    t0 = time.perf_counter()
    report = build_report(ReportConfig(sources=[str(results)], thumb_size=args.thumb_size))
    seconds = time.perf_counter() - t0
    page_file = args.cache / "report.html"
    size = write_report(report, str(page_file))
    n = len(report.sections[0].gallery.photos)
    print(f"{n} photos, {os.cpu_count()} cores: report built in {seconds:.1f} s "
          f"({n / seconds:.0f} photos/s; naive thumbnails, one thread: {1 / per_naive:.0f} "
          f"photos/s: x{n / seconds * per_naive:.1f})")  # fmt: skip
    print(f"file: {size / 2**20:.1f} MB, {size / n / 1024:.1f} KB per photo "
          f"(thumbnails {args.thumb_size} px)")  # fmt: skip
    if not args.no_browser:
        small = read_source(results)
        paths = list(dict.fromkeys(r["path"] for r in small.rows))[:100]
        small.rows = [r for r in small.rows if r["path"] in set(paths)]
        small_report = build_report(ReportConfig(sources=[]), given=[small])
        small_file = args.cache / "report-100.html"
        write_report(small_report, str(small_file))
        browser(page_file, small_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
