"""Benchmark ``biotrove classify`` against a naive loop, on the same photos and the same model.

    python benchmarks/bench_classify.py [--cache DIR] [--images 500] [--vit-images 200]
                                        [--models tiny,vitb16] [--device cpu|cuda]
                                        [--workers N] [--batch-size 32] [--no-bf16]
                                        [--no-onnx] [--one-photo]

ViT-B-16 runs on the first ``--vit-images`` of the same photos (default 200; pass 500 for all:
on a 2-core CPU it runs at a few images/s, so all 500 take a quarter of an hour). The photos
are generated once (``core/data/world.py``, 500x375 JPEGs like iNaturalist "medium"
photos) and kept in the cache folder. Each model gets seeded random weights, saved to a
checkpoint that both contenders load, and the 33-species demo label bank; class text
embeddings are computed before timing for both.

Timed, per model, on the same photos:

* naive: for each file: PIL open + RGB, the model's preprocess, ``encode_image`` of one image
  under ``torch.no_grad``, softmax over the species, top-5 (what a first script does), with
  torch's default threads, and with one thread (on the first 100 photos; one thread is immune
  to other processes on the cores, which stall multi-threaded small operators);
* biotrove: the ``classify`` core (``prepare_classify`` + ``ClassifyJob.run``): batches, JPEG
  draft decoding, DataLoader worker processes, ``inference_mode``; fp32, and bf16 (a bf16 copy
  of the image tower: ``--precision bf16``).

* biotrove on ONNX (when onnxruntime is installed; ``--no-onnx`` skips it): the same
  checkpoint exported with ``biotrove export --format onnx`` (fp32) and ``--quantize int8``
  (dynamic), classified by the same core on onnxruntime, numpy preprocessing, no torch.

``--one-photo`` times instead one photo from process start to the printed answer
(``biotrove classify PHOTO -k 1``, a fresh process each time, median of 5, class texts cached):
the PyTorch path on the checkpoint against the ONNX bundle (tiny: fp32; ViT-B-16: int8).

The ratio is images/s over the faster naive variant's images/s measured in this same process. Top-1
agreement with the naive loop is printed as a sanity check (draft decoding and bf16 change the
pixels/numerics slightly).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "biotrove_cli" / "resources" / "demo_species.csv"
MODELS = {"tiny": "biotrove-tiny", "vitb16": "ViT-B-16"}


def generate(cache: Path, n: int) -> list[Path]:
    from biotrove_cli.core.data.world import generate_world
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    bank = LabelBank.load(DEMO)
    per = -(-n // len(bank.taxa))
    t0 = time.perf_counter()
    photos = generate_world(bank.taxa, cache / "photos", per, seed=0, size=(500, 375))[:n]
    if time.perf_counter() - t0 > 1:
        print(f"generated photos in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return [p.path for p in photos]


def checkpoint(cache: Path, arch: str) -> Path:
    import torch

    from biotrove_cli.core.models.load import load_model

    path = cache / f"{arch}-seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(load_model(f"{arch}:random").model.state_dict(), path)
    return path


def naive(spec: str, paths: list[Path], device: str, threads: int | None = None):
    """One image at a time: open, preprocess, encode, score (torch's threads, or ``threads``)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from biotrove_cli.core.evaluation.text import class_embeddings, class_prompts
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    loaded = load_model(spec, device=device)
    bank = LabelBank.load(DEMO)
    prompts = class_prompts(bank, Rank.SPECIES, "taxon_com", ("a photo of {}.",))
    weights = class_embeddings(loaded, prompts)[0].to(device)
    scale = min(float(loaded.model.logit_scale.detach().exp()), 100.0)
    names = [t.binomial for t in bank.taxa]
    model, pre = loaded.model, loaded.preprocess
    top1 = []
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for path in paths:
        img = Image.open(path).convert("RGB")
        x = pre(img)[None].to(device)
        with torch.no_grad():
            f = F.normalize(model.encode_image(x).float(), dim=-1)
            probs = torch.softmax(scale * f @ weights.T, dim=-1)
            _, idx = probs.topk(5)
        top1.append(names[int(idx[0, 0])])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    torch.set_num_threads(old_threads)
    return seconds, top1


def ours(spec: str, folder: Path, n: int, args, precision: str) -> tuple[float, list[str]]:
    from biotrove_cli.core.evaluation.classify import ClassifyConfig, prepare_classify

    cfg = ClassifyConfig(
        paths=[str(folder)],
        model=spec,
        labels=str(DEMO),
        k=5,
        batch_size=args.batch_size,
        device=args.device,
        precision=precision,
        workers=args.workers,
    )
    job = prepare_classify(cfg)
    job.files = job.files[:n]
    top1 = []
    t0 = time.perf_counter()
    for records in job.run():
        top1 += [r["name"] for r in records if r["prediction"] == 1]
    return time.perf_counter() - t0, top1


def onnx_bundle(cache: Path, arch: str, quantize: bool) -> Path:
    """The seeded checkpoint exported as an ONNX bundle with the demo labels (made once)."""
    from biotrove_cli.core.models.export import ExportConfig, export_model

    out = cache / f"{arch}-seed0-onnx{'-int8' if quantize else ''}"
    if not out.exists():
        export_model(
            ExportConfig(
                source=str(checkpoint(cache, arch)),
                out=out,
                arch=arch,
                format="onnx",
                labels=DEMO,
                quantize="int8" if quantize else None,
                min_agreement=0.0,  # measured below, against the naive loop
            )
        )
    return out


def one_photo(spec: str, photo: Path, labels: bool, runs: int = 5) -> float:
    """Median seconds of ``biotrove classify PHOTO -m SPEC -k 1`` from process start."""
    import statistics
    import subprocess

    cmd = [sys.executable, "-m", "biotrove_cli", "classify", str(photo), "-m", spec, "-k", "1"]
    if labels:
        cmd += ["--labels", str(DEMO)]
    times = []
    for _ in range(runs + 1):  # the first run warms the page cache and the text cache
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
    return statistics.median(times[1:])


def one_photo_table(args, all_files: list[Path]) -> int:
    photo = all_files[0]
    print(f"one photo ({photo.name}), process start to printed answer, median of 5\n")
    print("model          PyTorch path (s)   ONNX bundle (s)   ratio")
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        arch = MODELS[key]
        torch_s = one_photo(f"{arch}:{checkpoint(args.cache, arch)}", photo, labels=True)
        bundle = onnx_bundle(args.cache, arch, quantize=key != "tiny")
        onnx_s = one_photo(str(bundle), photo, labels=False)
        kind = "int8" if key != "tiny" else "fp32"
        print(f"{arch:14s} {torch_s:16.2f}   {onnx_s:11.2f} ({kind})   x{onnx_s / torch_s:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "biotrove-bench")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--vit-images", type=int, default=200, help="photos for ViT-B-16")
    ap.add_argument("--models", default="tiny,vitb16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="default: biotrove's auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 run")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX runs")
    ap.add_argument("--one-photo", action="store_true", help="time one photo per process")
    args = ap.parse_args()
    os.environ.setdefault("BIOTROVE_HOME", str(args.cache / "home"))
    import torch

    from biotrove_cli.core.models.registry import ensure_registered

    ensure_registered()
    args.cache.mkdir(parents=True, exist_ok=True)
    paths = generate(args.cache, args.images)
    folder = args.cache / "photos"
    all_files = sorted(folder.glob("*.jpg"))
    # the classify core sorts a folder's files: time both contenders on the same first n
    paths = all_files[: args.images]
    if args.one_photo:
        return one_photo_table(args, all_files)
    print(
        f"{len(paths)} photos (500x375 JPEG), {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), device {args.device}, "
        f"workers {args.workers if args.workers is not None else 'auto'}, batch {args.batch_size}; "
        f"load average {os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    rows = []
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        arch = MODELS[key]
        spec = f"{arch}:{checkpoint(args.cache, arch)}"
        paths = all_files[: args.images if key == "tiny" else min(args.images, args.vit_images)]
        # the naive loop as a first script runs it (torch's default threads), and with one
        # thread (immune to other processes on the cores); the ratio is over the faster one
        t_naive, top_naive = naive(spec, paths, args.device)
        # (on the first 100 photos: its rate, not its predictions, is what is compared)
        few = paths[:100]
        t_one, _ = naive(spec, few, args.device, threads=1) if args.device == "cpu" else (0, 0)
        rate_naive = len(paths) / t_naive
        rate_one = len(few) / t_one if t_one else 0.0
        base = max(rate_naive, rate_one)
        rows.append((arch, "naive loop (fp32, torch threads)", rate_naive, 0, 1.0))
        if t_one:
            rows.append((arch, f"naive loop (fp32, 1 thread, {len(few)} photos)", rate_one, 0, 1.0))
        for i in range(len(rows) - (2 if t_one else 1), len(rows)):
            rows[i] = (*rows[i][:3], rows[i][2] / base, 1.0)
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and (args.no_bf16 or args.device.startswith("cuda")):
                continue
            t, top = ours(spec, folder, len(paths), args, precision)
            agree = sum(a == b for a, b in zip(top, top_naive, strict=True)) / len(paths)
            rate = len(paths) / t
            rows.append((arch, f"biotrove classify ({precision})", rate, rate / base, agree))
            if args.device.startswith("cuda"):
                break  # auto precision on CUDA is bf16 autocast already
        if not args.no_onnx and args.device == "cpu":
            for quantize in (False, True):
                bundle = onnx_bundle(args.cache, arch, quantize)
                t, top = ours(str(bundle), folder, len(paths), args, "auto")
                agree = sum(a == b for a, b in zip(top, top_naive, strict=True)) / len(paths)
                rate = len(paths) / t
                label = f"biotrove classify (ONNX {'int8' if quantize else 'fp32'})"
                rows.append((arch, label, rate, rate / base, agree))
        for r in rows:
            if r[0] == arch:
                print(
                    f"  {r[0]:14s} {r[1]:40s} {r[2]:8.1f} images/s  x{r[3]:.2f}  "
                    f"top-1 agreement {100 * r[4]:.0f}%",
                    flush=True,
                )
    print("\nmodel          method                                   images/s   ratio")
    for arch, method, rate, ratio, _ in rows:
        print(f"{arch:14s} {method:40s} {rate:8.1f}   x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
