"""The training data pipeline reading shards over HTTP vs from local disk, same run, same workers.

    python benchmarks/bench_remote_shards.py --work .bench/remote [--workers 2] [--repeat 3]

Builds (once, cached in --work) a sample world and real shards with ``biotrove shard`` (224 px
JPEGs, 100 samples a shard), serves the shard folder from a threaded HTTP server on 127.0.0.1
(started and stopped here), and runs the training loader alone (``make_loader``: shard reads,
JPEG decoding, the train transform, tokenization, batching; no model) for one epoch of the
``tiny`` preset's plan over

* the local folder, and
* ``http://127.0.0.1:PORT/train/shard-{000000..N}.tar`` (read with curl, as biotrove does),

alternating the two ``--repeat`` times. Prints samples/s of each (median) and the ratio
http / local. The target is a ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
    args = ["shard", str(meta), "--images", str(work / "images"), "--out", str(out)]
    args += ["--image-size", "224", "--samples-per-shard", "100", "--format", "json"]
    subprocess.run(
        [sys.executable, "-m", "biotrove_cli", "-q", *args], check=True, stdout=subprocess.DEVNULL
    )
    return out


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def epoch_rate(spec: str, workers: int, batch: int) -> tuple[float, int]:
    """Samples/s of one epoch of the training loader over ``spec`` (and the samples)."""
    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.training.data import make_loader
    from biotrove_cli.core.training.model import build_training_model
    from biotrove_cli.core.training.plan import resolve_data, stream_plan

    overrides = [f"data.train={spec}", f"data.workers={workers}", f"data.batch_size={batch}"]
    cfg = configlib.resolve(TrainConfig, preset="tiny", overrides=overrides)
    shards, num_samples, _ = resolve_data(cfg)
    model, transform, tokenizer = build_training_model(cfg, "cpu", "fp32")
    plan, _ = stream_plan(cfg, shards, num_samples, world_size=1, rank=0, image_size=64)
    t0 = time.perf_counter()
    n = 0
    for b in make_loader(plan, 0, 0, transform, tokenizer):
        n += b["images"].shape[0]
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / ".bench" / "remote")
    ap.add_argument("--species", type=int, default=24)
    ap.add_argument("--images", type=int, default=64, help="photos per species")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    shards = build_shards(args.work, args.species, args.images)
    n_tars = len(list((shards / "train").glob("shard-*.tar")))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(shards)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = (
        f"http://127.0.0.1:{server.server_address[1]}/train/shard-{{000000..{n_tars - 1:06d}}}.tar"
    )
    rates: dict[str, list[float]] = {"local": [], "http": []}
    try:
        for i in range(args.repeat):
            order = [("local", str(shards)), ("http", url)]
            for name, spec in order if i % 2 == 0 else order[::-1]:
                rate, n = epoch_rate(spec, args.workers, args.batch_size)
                rates[name].append(rate)
                print(f"  {name:5s} run {i + 1}: {n} samples, {rate:.1f} samples/s", flush=True)
    finally:
        server.shutdown()
        server.server_close()
    local, http = statistics.median(rates["local"]), statistics.median(rates["http"])
    print(f"shards: {n_tars} x ~100 samples (224 px JPEGs), workers {args.workers}, "
          f"batch {args.batch_size}, {args.repeat} runs each")  # fmt: skip
    print(f"local disk:      {local:.1f} samples/s (median)")
    print(f"http (loopback): {http:.1f} samples/s (median)")
    print(f"ratio http/local: {http / local:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
