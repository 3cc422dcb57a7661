"""Benchmark a name-style sweep (``biotrove eval --text-type all``) against a single-type eval of
the same images: the five types share one image pass, so the sweep should cost little more.

    python benchmarks/bench_eval_sweep.py [--cache DIR] [--images 500] [--models tiny,vitb16]
                                          [--vit-images 100] [--templates simple|openai]
                                          [--bank-species N] [--repeat 2]

Data: the 224 px shards of ``bench_eval.py`` (photos of the 33 demo species, generated once and
kept in the cache folder). ``--bank-species N`` scores against the first N iNat2021 species
plus the data's own (``--labels``), for a bank of realistic size. Each model gets seeded random
weights.

Timed, per model, end to end (``evaluate``: model load, class texts, image pass, records), with
the text-embedding cache off so that every class text is encoded in both runs:

* single: ``--text-type taxon_com`` (the default);
* sweep: ``--text-type all`` (sci, com, taxon, sci_com, taxon_com).

Each is run ``--repeat`` times, alternating, and the best time kept; the ratio sweep / single
is printed (the goal: at most 1.4), for the wall time and for this process's CPU time (the
decoding workers' CPU is the same in both runs and not counted; on a machine shared with other
jobs the CPU ratio is the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import INAT, MODELS, checkpoint, make_shards  # noqa: E402


def bank_file(cache: Path, shards: Path, n: int) -> Path | None:
    """The first ``n`` iNat2021 species plus the data's own, as a label table (or None)."""
    if n <= 0:
        return None
    import pandas as pd

    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    path = cache / f"bank-inat{n}.parquet"
    if not path.exists():
        own = LabelBank.load(shards)
        inat = LabelBank.from_metadata([INAT])
        taxa = list(own.taxa) + [t for t in inat.taxa[:n] if t not in own.taxa]
        LabelBank.from_taxa(taxa).save(path)
        assert len(pd.read_parquet(path)) >= n
    return path


def run(
    spec: str, shards: Path, n: int, text_type: str, args, labels: Path | None
) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one ``evaluate``."""
    from biotrove_cli.core.evaluation.config import EvalConfig
    from biotrove_cli.core.evaluation.engine import evaluate

    cfg = EvalConfig(
        models=[spec],
        data=str(shards),
        split="train",
        labels=str(labels) if labels else None,
        text_type=text_type,
        templates=args.templates,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        limit=n,
        use_cache=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate(cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert {r["text_type"] for r in result.records} == set(cfg.text_types)
    return seconds, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "biotrove-bench")
    ap.add_argument("--images", type=int, default=500, help="images for the tiny model")
    ap.add_argument("--vit-images", type=int, default=100, help="images for ViT-B-16")
    ap.add_argument("--models", default="tiny,vitb16")
    ap.add_argument("--templates", default="simple")
    ap.add_argument("--bank-species", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="default: biotrove's auto")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("BIOTROVE_HOME", str(args.cache / "home"))
    import torch

    from biotrove_cli.core.models.registry import ensure_registered

    ensure_registered()
    args.cache.mkdir(parents=True, exist_ok=True)
    shards = make_shards(args.cache, max(args.images, args.vit_images))
    labels = bank_file(args.cache, shards, args.bank_species)
    print(
        f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), device {args.device}, templates {args.templates}, bank "
        f"{'the data' + chr(39) + 's 33 species' if labels is None else labels.name}; load "
        f"average {os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    print("\nmodel          images  single (s)  sweep of 5 (s)  ratio   CPU: single  sweep  ratio")
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        arch = MODELS[key]
        n = args.images if key == "tiny" else args.vit_images
        spec = f"{arch}:{checkpoint(args.cache, arch)}"
        single, sweep = [], []
        for _ in range(args.repeat):
            single.append(run(spec, shards, n, "taxon_com", args, labels))
            sweep.append(run(spec, shards, n, "all", args, labels))
        s, cs = min(t for t, _ in single), min(c for _, c in single)
        w, cw = min(t for t, _ in sweep), min(c for _, c in sweep)
        print(
            f"{arch:14s} {n:6d}  {s:10.2f}  {w:14.2f}  x{w / s:.2f}   {cs:11.2f}  {cw:5.2f}  "
            f"x{cw / cs:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
