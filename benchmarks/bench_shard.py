"""Benchmark ``biotrove shard`` against a plain single-process sharder, in one process.

    python benchmarks/bench_shard.py CACHE_DIR [--images 2000] [--workers 2] [--repeat 1]

CACHE_DIR keeps the generated photos (about 500x375 JPEGs, like iNaturalist "medium" photos,
made once with ``core/data/world.py``) and their BioTrove-schema metadata between runs.

Measured, on the same photos, in this order:

* baseline: PIL open + RGB + resize (longest side 224, bicubic) + JPEG encode +
  ``webdataset.ShardWriter`` ({key}.jpg + {key}.txt), one process;
* biotrove ``--resize-mode keep_ratio_largest --image-size 224`` with ``--workers N``;
* biotrove ``--resize-mode none`` (JPEG pass-through) with ``--workers N``, and with 1.

Each figure is the wall time of the whole job (planning, worker start-up and finalize
included), best of ``--repeat`` round-robin runs; the ratio is images/s over the baseline's
images/s from this same run. ``cpu ms/img`` (this process plus its writer processes) shows the
work per photo, which other load on the machine does not change: on a shared machine the
wall-clock ratio of the multi-process variant is capped by the cores actually free.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def generate(cache: Path, n: int) -> Path:
    """``n`` photos of the demo species at 500x375 plus metadata; reused when present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biotrove_cli.core.data.world import generate_world
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    meta = cache / f"metadata-{n}.parquet"
    images = cache / "images"
    bank = LabelBank.load(
        Path(__file__).resolve().parents[1] / "biotrove_cli/resources/demo_species.csv"
    )
    taxa = bank.taxa[:40]
    per = -(-n // len(taxa))
    t0 = time.monotonic()
    photos = generate_world(taxa, images, images_per_species=per, seed=0, size=(500, 375))[:n]
    if time.monotonic() - t0 > 1:
        print(f"generated photos in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    if not meta.exists():
        names = ("photo_id", "scientificName", "kingdom", "phylum", "class", "order", "family",
                 "genus", "species", "common_name", "photo_url")  # fmt: skip
        cols: dict[str, list] = {k: [] for k in names}
        for p in photos:
            t = p.taxon
            cols["photo_id"].append(int(p.photo_id))
            cols["scientificName"].append(t.scientific_name)
            for rank, name in zip(("kingdom", "phylum", "class", "order", "family", "genus",
                                   "species"), t.names, strict=True):  # fmt: skip
                cols[rank].append(name)
            cols["common_name"].append(t.common_name)
            cols["photo_url"].append("")
        pq.write_table(pa.table(cols), meta)
    return meta


def baseline(meta: Path, images: Path, out: Path, size: int = 224) -> int:
    """The plain way: one process, PIL, webdataset.ShardWriter."""
    import pyarrow.parquet as pq
    import webdataset as wds
    from PIL import Image

    table = pq.read_table(meta).to_pylist()
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with wds.ShardWriter(str(out / "shard-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for row in table:
            img = Image.open(images / f"{row['photo_id']}.jpg").convert("RGB")
            w, h = img.size
            r = size / max(w, h)
            if r < 1:
                img = img.resize((max(1, round(w * r)), max(1, round(h * r))), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            caption = (
                f"a photo of {row['kingdom']} {row['phylum']} {row['class']} {row['order']} "
                f"{row['family']} {row['genus']} {row['species']} with common name "
                f"{row['common_name']}."
            )
            sink.write({"__key__": str(row["photo_id"]), "jpg": buf.getvalue(), "txt": caption})
            n += 1
    return n


def ours(meta: Path, images: Path, out: Path, mode: str, workers: int, n: int) -> int:
    from biotrove_cli.core.data.shard import ShardConfig, shard_dataset

    # 16 shards: enough units for every worker (one unit only would run in-process)
    cfg = ShardConfig(
        metadata=[meta], images=images, out=out, resize_mode=mode, image_size=224,
        workers=workers, samples_per_shard=max(10, -(-n // 16)),
    )  # fmt: skip
    result = shard_dataset(cfg)
    assert result.finalized
    return sum(s.written for s in result.splits)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the writer processes)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(fn, scratch: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, images) of one run into a fresh folder."""
    out = scratch / f"run-{time.monotonic_ns()}"
    c0, t0 = _cpu_seconds(), time.perf_counter()
    n = fn(out)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    shutil.rmtree(out, ignore_errors=True)
    return wall, cpu, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cache", type=Path, help="folder for the generated photos (kept)")
    ap.add_argument("--images", type=int, default=2000, help="number of photos (default 2000)")
    ap.add_argument("--workers", type=int, default=2, help="biotrove writer processes")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant; the best counts")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    args.cache.mkdir(parents=True, exist_ok=True)
    meta = generate(args.cache, args.images)
    images = args.cache / "images"
    # imports are not what we measure (webdataset imports torch: seconds)
    import pyarrow.parquet  # noqa: F401
    import webdataset  # noqa: F401
    from PIL import Image  # noqa: F401

    import biotrove_cli.core.data.shard  # noqa: F401

    load0 = os.getloadavg()
    variants = [
        ("baseline (PIL + ShardWriter, 1 process)", lambda o: baseline(meta, images, o)),
        (f"biotrove keep_ratio_largest, {args.workers} workers",
         lambda o: ours(meta, images, o, "keep_ratio_largest", args.workers, args.images)),
        (f"biotrove --resize-mode none, {args.workers} workers",
         lambda o: ours(meta, images, o, "none", args.workers, args.images)),
        ("biotrove --resize-mode none, 1 process",
         lambda o: ours(meta, images, o, "none", 1, args.images)),
    ]  # fmt: skip
    best: dict[str, tuple[float, float, int]] = {}
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        # round-robin repeats: a burst of load from elsewhere hits every variant alike
        for _ in range(args.repeat):
            for label, fn in variants:
                wall, cpu, n = run_once(fn, Path(tmp))
                if label not in best or wall < best[label][0]:
                    best[label] = (wall, cpu, n)
    load1 = os.getloadavg()

    base_wall, _, base_n = best[variants[0][0]]
    base_rate = base_n / base_wall
    print(f"\nbiotrove shard benchmark: {args.images} photos of 500x375 (JPEG), "
          f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} -> {load1[0]:.2f}, "
          f"best of {args.repeat}")  # fmt: skip
    print(f"{'variant':<44} {'images':>6} {'wall s':>7} {'cpu ms/img':>10} {'images/s':>9} "
          f"{'ratio':>6}")  # fmt: skip
    results = []
    for label, _ in variants:
        wall, cpu, n = best[label]
        rate = n / wall
        print(f"{label:<44} {n:>6} {wall:>7.2f} {1000 * cpu / n:>10.2f} {rate:>9.1f} "
              f"{rate / base_rate:>5.2f}x")  # fmt: skip
        results.append({"variant": label, "images": n, "seconds": wall, "cpu_seconds": cpu,
                        "images_per_s": rate, "ratio": rate / base_rate})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "cpus": os.cpu_count(),
                                         "load_average": [load0, load1],
                                         "results": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
