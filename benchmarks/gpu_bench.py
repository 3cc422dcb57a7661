"""GPU measurements in one short run (see ../shared/GPU.md and benchmarks/gpu.sh):
training against stock open_clip_train, eval and classify throughput. All data is generated on
the machine itself (the sample world: 500x375 JPEG photos, and 224 px shards of them).

    python3 benchmarks/gpu_bench.py --out RESULTS_DIR [--steps 40] [--batch-size 512]
    python3 benchmarks/gpu_bench.py --out /tmp/smoke --smoke      # CPU smoke test of the script

Training: stock open_clip_train (synthetic data) vs biotrove train on real JPEG shards.

Measures ViT-B-16, batch 512 per GPU, bf16 autocast, local loss + gather with grad:

* ``stock``: ``open_clip_train.main --dataset-type synthetic --grad-checkpointing`` (the
  reference figure: 1,536 samples/s on an H200);
* ``biotrove (ckpt, cpu decode)``: biotrove with the same flags, fed from 224 px JPEG shards
  decoded by DataLoader workers;
* ``biotrove (device decode)``: no gradient checkpointing, JPEGs decoded and augmented on the GPU
  (nvjpeg) so the CPU workers only read tars;
* ``biotrove (device decode, compile)``: the same with ``torch.compile``.

Prints samples/s (median of the steps after warm-up), peak GPU memory and the ratio to stock,
and writes results.json and the logs into --out. Target: >= 1.8x stock on the same card.

Eval: ``biotrove eval`` of ViT-B-16 (random weights) over the 224 px shards, all ranks, bf16
autocast (target: 5,000 images/s end to end on one H100/H200).
Classify: ``biotrove classify`` of the ~500x375 photo files with ViT-B-16 over the demo label
bank (target: 2,000 images/s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _gen(args):
    from biotrove_cli.core.data.world import generate_world
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    lo, hi, folder, per = args
    bank = LabelBank.load(REPO / "biotrove_cli" / "resources" / "demo_species.csv")
    return generate_world(
        bank.taxa[lo:hi],
        folder,
        images_per_species=per,
        seed=0,
        size=(500, 375),
        id_offset=lo * per,
    )


def build_shards(work: Path, per_species: int, image_size: int) -> Path:
    out = work / "shards"
    if (out / "manifest.json").is_file():
        return out
    from biotrove_cli.core.data.world import write_metadata

    images = work / "images"
    jobs = [(i, i + 1, images, per_species) for i in range(33)]
    with mp.Pool(min(16, os.cpu_count() or 1)) as pool:
        photos = [p for chunk in pool.map(_gen, jobs) for p in chunk]
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
            str(images),
            "--out",
            str(out),
            "--image-size",
            str(image_size),
            "--resize-mode",
            "center_crop",
            "--samples-per-shard",
            "256",
            "--workers",
            str(min(14, os.cpu_count() or 1)),
            "--format",
            "json",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def median_after_warmup(rates: list[float], warm: int) -> float:
    tail = sorted(rates[warm:]) or sorted(rates) or [0.0]
    return tail[len(tail) // 2]


def run_stock(
    out: Path, arch: str, steps: int, batch: int, workers: int, precision: str, warm: int
) -> dict:
    logs = out / "stock-logs"
    code = (
        "import open_clip, sys\n"
        f"open_clip.add_model_config({str(REPO / 'biotrove_cli/core/models/configs')!r})\n"
        "from open_clip_train.main import main\nmain(sys.argv[1:])\n"
    )
    args = [
        "--dataset-type",
        "synthetic",
        "--train-num-samples",
        str(steps * batch),
        "--model",
        arch,
        "--batch-size",
        str(batch),
        "--workers",
        str(workers),
        "--epochs",
        "1",
        "--precision",
        precision,
        "--local-loss",
        "--gather-with-grad",
        "--grad-checkpointing",
        "--lr",
        "5e-4",
        "--warmup",
        "10",
        "--logs",
        str(logs),
        "--name",
        "stock",
        "--log-every-n-steps",
        "1",
        "--save-frequency",
        "0",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    (out / "stock.stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    log = (logs / "stock" / "out.log").read_text()
    rates = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s,", log)]
    return {
        "samples_per_s": median_after_warmup(rates, warm),
        "wall_s": time.perf_counter() - t0,
        "max_mem_gb": None,
    }


def run_biotrove(
    out: Path,
    name: str,
    shards: Path,
    arch: str,
    steps: int,
    batch: int,
    workers: int,
    precision: str,
    warm: int,
    extra: list[str],
) -> dict:
    run = out / f"run-{name}"
    args = [
        sys.executable,
        "-m",
        "biotrove_cli",
        "-q",
        "train",
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
        "--precision",
        precision,
        f"model.arch={arch}",
        "model.init=none",
        "data.resampled=true",
        "data.text_type=random",
        "local_loss=true",
        "gather_with_grad=true",
        "optim.lr=5e-4",
        "optim.warmup=10",
        "log_every=1",
        "save_every=0",
        "keep_last=1",
        "data.shuffle_buffer=256",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    (out / f"{name}.stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    rates, mem = [], None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m.get("kind") == "train":
            rates.append(m["samples_per_s"])
            mem = m.get("max_mem_gb", mem)
    return {
        "samples_per_s": median_after_warmup(rates, warm),
        "wall_s": time.perf_counter() - t0,
        "max_mem_gb": mem,
    }


def run_eval(out: Path, shards: Path, arch: str, device: str, batch: int, workers: int) -> dict:
    result = out / "eval.json"
    args = [
        sys.executable,
        "-m",
        "biotrove_cli",
        "-q",
        "eval",
        "--model",
        f"{arch}:random",
        "--data",
        str(shards),
        "--split",
        "train",
        "--device",
        device,
        "--batch-size",
        str(batch),
        "--workers",
        str(workers),
        "--format",
        "json",
        "-o",
        str(result),
        "--summary",
        str(out / "eval-summary.json"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    (out / "eval.stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    doc = json.loads((out / "eval-summary.json").read_text())
    timings = (doc.get("models") or [{}])[0].get("timings", {})
    return {
        "images_per_s": timings.get("images_per_s"),
        "wall_s": time.perf_counter() - t0,
        "images": json.loads(result.read_text())[0]["n_images"],
    }


def run_classify(out: Path, images: Path, arch: str, device: str, batch: int, workers: int) -> dict:
    result = out / "predictions.csv"
    labels = REPO / "biotrove_cli" / "resources" / "demo_species.csv"
    args = [
        sys.executable,
        "-m",
        "biotrove_cli",
        "classify",
        str(images),
        "--model",
        f"{arch}:random",
        "--labels",
        str(labels),
        "--device",
        device,
        "--batch-size",
        str(batch),
        "--workers",
        str(workers),
        "-k",
        "1",
        "-o",
        str(result),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    (out / "classify.stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    m = re.search(r"classified (\d+) images? in ([\d.]+) s \(([\d.]+) images/s\)", proc.stderr)
    return {
        "images_per_s": float(m.group(3)) if m else None,
        "images": int(m.group(1)) if m else None,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=14)
    ap.add_argument("--per-species", type=int, default=250, help="photos per species (x33)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: test the script")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    arch, precision, warm = "ViT-B-16", "amp_bf16", 10
    if args.smoke:
        arch, precision, warm = "biotrove-tiny", "fp32", 2
        args.steps, args.batch_size, args.workers, args.per_species = 6, 16, 1, 6
    default_work = f"/tmp/biotrove-gpu-bench{'-smoke' if args.smoke else ''}"
    work = Path(os.environ.get("BIOTROVE_BENCH_WORK", default_work))
    t0 = time.perf_counter()
    shards = build_shards(work, args.per_species, 64 if args.smoke else 224)
    print(f"shards ready in {time.perf_counter() - t0:.0f}s: {shards}", flush=True)
    results = {
        "stock": run_stock(
            args.out, arch, args.steps, args.batch_size, args.workers, precision, warm
        )
    }
    variants = {
        "biotrove (ckpt, cpu decode)": ["model.grad_checkpointing=true"],
        "biotrove (device decode)": ["data.decode=device"],
        "biotrove (device decode, compile)": ["data.decode=device", "model.compile=true"],
    }
    if args.smoke:
        variants.pop("biotrove (device decode, compile)")
    for name, extra in variants.items():
        slug = re.sub(r"[^a-z]+", "-", name).strip("-")
        results[name] = run_biotrove(
            args.out,
            slug,
            shards,
            arch,
            args.steps,
            args.batch_size,
            args.workers,
            precision,
            warm,
            extra,
        )
        print(f"{name}: {results[name]}", flush=True)
    device = "cpu" if args.smoke else "cuda"
    inference = {
        "eval": run_eval(args.out, shards, arch, device, 16 if args.smoke else 1024, args.workers),
        "classify": run_classify(
            args.out, work / "images", arch, device, 16 if args.smoke else 512, args.workers
        ),
    }
    results["inference"] = inference
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    base = results["stock"].get("samples_per_s")
    print(
        f"\n{arch}, batch {args.batch_size}/GPU, {precision}, local loss + gather with grad, "
        f"{args.steps} steps"
    )
    print(f"{'trainer':<38}{'samples/s':>11}{'peak GiB':>10}{'vs stock':>10}")
    for name, r in results.items():
        if name == "inference":
            continue
        if "error" in r:
            print(f"{name:<38}{'failed':>11}   see {name}.stderr.log")
            continue
        mem = f"{r['max_mem_gb']:.1f}" if r.get("max_mem_gb") else "-"
        ratio = f"{r['samples_per_s'] / base:.2f}x" if base else "-"
        print(f"{name:<38}{r['samples_per_s']:>11.0f}{mem:>10}{ratio:>10}")

    print(f"\n{arch} inference, {device}, random weights")
    for name, r in inference.items():
        if "error" in r:
            print(f"{name:<10} failed: see {name}.stderr.log")
        else:
            print(f"{name:<10} {r['images_per_s'] or 0:>10.0f} images/s over {r['images']} images")


if __name__ == "__main__":
    main()
