"""Training throughput on CPU: biotrove train vs stock open_clip_train, same shards, same steps.

    python benchmarks/bench_train_cpu.py --work .bench/train [--steps 60] [--batch-size 64]

Builds (once, cached in --work) a sample world and real shards with ``biotrove shard``
(224 px JPEGs, the usual shard size), then trains the tiny architecture for the same number of
steps, same batch size, same data workers, fp32, one epoch of resampled data (the BioTrove
recipe's data mode; an epoch is ``steps x batch`` samples), with:

* stock ``open_clip_train.main`` (``--dataset-type webdataset``; the tiny config is registered
  with ``open_clip.add_model_config``, nothing else changes), and
* ``biotrove train --preset tiny``.

Both run in fresh subprocesses, one after the other, on the same machine. Prints samples/s for
the whole run (startup included) and for the steady state (from each trainer's own step logs),
and the ratio biotrove / stock. The target is ratio >= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_shards(work: Path, species: int, images: int) -> Path:
    out = work / "shards"
    if (out / "manifest.json").is_file():
        return out
    sys.path.insert(0, str(REPO))
    from biotrove_cli.core.data.world import generate_world, write_metadata
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    bank = LabelBank.load(REPO / "biotrove_cli" / "resources" / "demo_species.csv")
    photos = generate_world(
        bank.taxa[:species], work / "images", images_per_species=images, seed=0, size=(500, 375)
    )
    meta = write_metadata(photos, work / "metadata.parquet")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "biotrove_cli",
            "-q",
            "shard",
            str(meta),
            "--images",
            str(work / "images"),
            "--out",
            str(out),
            "--image-size",
            "224",
            "--samples-per-shard",
            "100",
            "--format",
            "json",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def run_stock(shards: Path, work: Path, steps: int, batch: int, workers: int) -> dict:
    tars = sorted((shards / "train").glob("shard-*.tar"))
    pattern = str(shards / "train" / f"shard-{{000000..{len(tars) - 1:06d}}}.tar")
    logs = work / "stock-logs"
    name = f"run-{int(time.time())}"
    code = (
        "import open_clip, sys\n"
        f"open_clip.add_model_config({str(REPO / 'biotrove_cli/core/models/configs')!r})\n"
        "from open_clip_train.main import main\n"
        "main(sys.argv[1:])\n"
    )
    args = [
        "--dataset-type",
        "webdataset",
        "--dataset-resampled",
        "--train-data",
        pattern,
        "--train-num-samples",
        str(steps * batch),
        "--model",
        "biotrove-tiny",
        "--batch-size",
        str(batch),
        "--workers",
        str(workers),
        "--epochs",
        "1",
        "--precision",
        "fp32",
        "--lr",
        "2e-3",
        "--wd",
        "0.1",
        "--warmup",
        "20",
        "--logs",
        str(logs),
        "--name",
        name,
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
        "--seed",
        "0",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"stock open_clip_train failed:\n{proc.stderr[-3000:]}")
    log = (logs / name / "out.log").read_text()
    rates = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s,", log)]
    return {"wall_s": wall, "steps": len(rates), "step_rates": rates}


def run_biotrove(shards: Path, work: Path, steps: int, batch: int, workers: int) -> dict:
    run = work / f"bt-run-{int(time.time())}"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "biotrove_cli",
            "-q",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(shards),
            "--run-dir",
            str(run),
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--workers",
            str(workers),
            "--epochs",
            "1",
            "log_every=1",
            "save_every=0",
            "optim.warmup=20",
            "data.resampled=true",
            f"data.num_samples={steps * batch}",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"biotrove train failed:\n{proc.stderr[-3000:]}")
    rates = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m.get("kind") == "train":
            rates.append(m["samples_per_s"])
    return {"wall_s": wall, "steps": len(rates), "step_rates": rates}


def steady(rates: list[float]) -> float:
    """Median samples/s over the steps after the first 20% (warm caches, workers running)."""
    tail = sorted(rates[len(rates) // 5 :]) or [0.0]
    return tail[len(tail) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "train")
    ap.add_argument("--species", type=int, default=16)
    ap.add_argument("--images", type=int, default=40, help="photos per species")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    shards = build_shards(args.work, args.species, args.images)
    stock = run_stock(shards, args.work, args.steps, args.batch_size, args.workers)
    ours = run_biotrove(shards, args.work, args.steps, args.batch_size, args.workers)
    samples = args.steps * args.batch_size
    rows = []
    for name, r in (("open_clip_train (stock)", stock), ("biotrove train", ours)):
        rows.append((name, samples / r["wall_s"], steady(r["step_rates"]), r["wall_s"]))
    print(
        f"\nCPU training, biotrove-tiny, {args.steps} steps x batch {args.batch_size}, "
        f"{args.workers} data worker(s), fp32, {os.cpu_count()} cores"
    )
    print(f"{'trainer':<26}{'end-to-end samples/s':>22}{'steady samples/s':>18}{'wall s':>9}")
    for name, e2e, st, wall in rows:
        print(f"{name:<26}{e2e:>22.1f}{st:>18.1f}{wall:>9.1f}")
    ratio_e2e = rows[1][1] / rows[0][1]
    ratio_steady = rows[1][2] / rows[0][2] if rows[0][2] else float("nan")
    print(
        f"ratio biotrove/stock: end-to-end {ratio_e2e:.2f}x, steady state {ratio_steady:.2f}x"
        f" (target >= 1.0)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "stock": stock,
                    "biotrove": ours,
                    "ratio_end_to_end": ratio_e2e,
                    "ratio_steady": ratio_steady,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
