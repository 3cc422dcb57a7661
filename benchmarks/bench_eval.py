"""Benchmark ``biotrove eval`` against a plain open_clip loop, and the text-embedding cache.

    python benchmarks/bench_eval.py [--cache DIR] [--images 500] [--vit-images 200]
                                    [--models tiny,vitb16] [--device cpu|cuda] [--workers N]
                                    [--batch-size 64] [--skip-text]

Data: photos of the 33 demo species generated once (``core/data/world.py``, 500x375) and
sharded with biotrove's own writer at 224 px (``core/data/shard/``), kept in the cache folder.
Each model gets seeded random weights saved to a checkpoint that both contenders load.

Timed, per model, over the same shards (image pass only; model load and class texts are
excluded for both, since both compute the same species text embeddings beforehand):

* plain: ``webdataset.WebDataset(...).decode("pil")``, the model's preprocess per image,
  ``encode_image`` one batch at a time under ``torch.no_grad``, species argmax (one rank);
* biotrove: the ``eval`` core (``evaluate``) with all seven ranks rolled up, top-5, per-class
  tallies and mistake severity, images decoded in DataLoader workers; fp32 and bf16.

Then the text embeddings of the 10,000-species iNat2021 label bank with the tiny model: cold
(encoded) and cached (read back), through the cache ``eval`` and ``classify`` use.
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
INAT = REPO / "biotrove_cli" / "resources" / "inat2021_categories.csv.gz"
MODELS = {"tiny": "biotrove-tiny", "vitb16": "ViT-B-16"}


def make_shards(cache: Path, n: int) -> Path:
    """``n`` photos as 224 px shards (train split), written by ``biotrove shard``'s core."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from biotrove_cli.core.data.shard import ShardConfig, shard_dataset
    from biotrove_cli.core.data.world import generate_world
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    out = cache / f"shards-224-{n}"
    if (out / "manifest.json").is_file():
        return out
    bank = LabelBank.load(DEMO)
    per = -(-n // len(bank.taxa))
    photos = generate_world(bank.taxa, cache / "photos", per, seed=0, size=(500, 375))[:n]
    names = ("photo_id", "scientificName", "kingdom", "phylum", "class", "order", "family",
             "genus", "species", "common_name", "photo_url")  # fmt: skip
    cols: dict[str, list] = {k: [] for k in names}
    for p in photos:
        t = p.taxon
        cols["photo_id"].append(int(p.photo_id))
        cols["scientificName"].append(t.scientific_name)
        for rank, name in zip(names[2:9], t.names, strict=True):
            cols[rank].append(name)
        cols["common_name"].append(t.common_name)
        cols["photo_url"].append("")
    meta = cache / f"metadata-{n}.parquet"
    pq.write_table(pa.table(cols), meta)
    shard_dataset(
        ShardConfig(
            metadata=[meta],
            images=cache / "photos",
            out=out,
            image_size=224,
            samples_per_shard=100,
            workers=max(1, (os.cpu_count() or 2) - 1),
        )
    )
    return out


def checkpoint(cache: Path, arch: str) -> Path:
    import torch

    from biotrove_cli.core.models.load import load_model

    path = cache / f"{arch}-seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(load_model(f"{arch}:random").model.state_dict(), path)
    return path


def plain(spec: str, shards: Path, n: int, batch_size: int, device: str) -> tuple[float, float]:
    """A plain open_clip + webdataset loop; returns (seconds, species top-1)."""
    import torch
    import torch.nn.functional as F
    import webdataset as wds

    from biotrove_cli.core.data.sample import taxon_from_meta
    from biotrove_cli.core.evaluation.text import class_embeddings, class_prompts
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    loaded = load_model(spec, device=device)
    bank = LabelBank.load(shards)
    prompts = class_prompts(bank, Rank.SPECIES, "taxon_com", ("a photo of {}.",))
    weights = class_embeddings(loaded, prompts)[0].to(device)
    index = {t.species_key: i for i, t in enumerate(bank.taxa)}
    model, pre = loaded.model, loaded.preprocess
    tars = sorted(str(p) for p in (shards / "train").glob("*.tar"))
    ds = wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg", "json")
    right = seen = 0
    images, truth = [], []

    def flush() -> int:
        x = torch.stack(images).to(device)
        with torch.no_grad():
            f = F.normalize(model.encode_image(x).float(), dim=-1)
            pred = (f @ weights.T).argmax(dim=1).cpu().tolist()
        return sum(p == t for p, t in zip(pred, truth, strict=True))

    t0 = time.perf_counter()
    for img, meta in ds:
        images.append(pre(img))
        truth.append(index[taxon_from_meta(meta).species_key])
        seen += 1
        if len(images) == batch_size:
            right += flush()
            images, truth = [], []
        if seen >= n:
            break
    if images:
        right += flush()
    return time.perf_counter() - t0, right / seen


def ours(spec: str, shards: Path, n: int, args, precision: str) -> tuple[float, float]:
    from biotrove_cli.core.evaluation.config import EvalConfig
    from biotrove_cli.core.evaluation.engine import evaluate

    cfg = EvalConfig(
        models=[spec],
        data=str(shards),
        split="train",
        batch_size=args.batch_size,
        device=args.device,
        precision=precision,
        workers=args.workers,
        limit=n,
    )
    result = evaluate(cfg)
    species = [r for r in result.records if r["rank"] == "species"][0]
    return result.document["models"][0]["timings"]["images_s"], species["top1"]


def text_cache(cache: Path) -> None:
    import shutil

    from biotrove_cli.core.evaluation.text import cache_root, class_embeddings, class_prompts
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    bank = LabelBank.load(INAT)
    loaded = load_model(f"biotrove-tiny:{checkpoint(cache, 'biotrove-tiny')}")
    prompts = class_prompts(bank, Rank.SPECIES, "taxon_com", ("a photo of {}.",))
    shutil.rmtree(cache_root(), ignore_errors=True)
    t0 = time.perf_counter()
    _, hit0 = class_embeddings(loaded, prompts)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, hit1 = class_embeddings(loaded, prompts)
    warm = time.perf_counter() - t0
    assert (hit0, hit1) == (False, True)
    print(
        f"\ntext embeddings, {len(bank)} iNat2021 species x 1 template, biotrove-tiny: "
        f"cold {cold:.2f} s, cached {warm:.3f} s (x{cold / warm:.0f})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "biotrove-bench")
    ap.add_argument("--images", type=int, default=500, help="images for the tiny model")
    ap.add_argument("--vit-images", type=int, default=200, help="images for ViT-B-16")
    ap.add_argument("--models", default="tiny,vitb16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="default: biotrove's auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-text", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("BIOTROVE_HOME", str(args.cache / "home"))
    import torch

    from biotrove_cli.core.models.registry import ensure_registered

    ensure_registered()
    args.cache.mkdir(parents=True, exist_ok=True)
    n_max = max(args.images, args.vit_images)
    shards = make_shards(args.cache, n_max)
    print(
        f"{n_max} images in 224 px shards, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {args.device}, workers "
        f"{args.workers if args.workers is not None else 'auto'}, batch {args.batch_size}; load "
        f"average {os.getloadavg()[0]:.1f} (other processes share the cores)"
    )
    rows = []
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        arch = MODELS[key]
        n = args.vit_images if key != "tiny" else args.images
        spec = f"{arch}:{checkpoint(args.cache, arch)}"
        t_plain, acc_plain = plain(spec, shards, n, args.batch_size, args.device)
        base = n / t_plain
        rows.append((arch, n, "plain open_clip loop (species only)", base, 1.0, acc_plain))
        print(f"  {rows[-1][0]:14s} {rows[-1][2]:40s} {base:8.1f} images/s", flush=True)
        precisions = ["auto"] if args.device.startswith("cuda") else ["fp32", "bf16"]
        for precision in precisions:
            t, acc = ours(spec, shards, n, args, precision)
            rate = n / t
            rows.append((arch, n, f"biotrove eval, 7 ranks ({precision})", rate, rate / base, acc))
            print(f"  {arch:14s} {rows[-1][2]:40s} {rate:8.1f} images/s  x{rate / base:.2f}",
                  flush=True)  # fmt: skip
    print("\nmodel          images  method                                  images/s  ratio  "
          "species top-1")  # fmt: skip
    for arch, n, method, rate, ratio, acc in rows:
        print(f"{arch:14s} {n:6d}  {method:38s} {rate:9.1f}  x{ratio:.2f}  {100 * acc:.1f}%")
    if not args.skip_text:
        text_cache(args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
