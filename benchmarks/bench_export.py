"""Benchmark what ``biotrove export`` buys a user: a training checkpoint vs its exported bundle.

    python benchmarks/bench_export.py WORK_DIR [--arch ViT-B-16] [--dtype fp16] [--repeat 3]

WORK_DIR receives a checkpoint shaped like the published BioTrove-CLIP files (random weights of
``--arch`` with ``module.`` prefixes, AdamW state for every parameter, numpy scalars in the
pickle) and its export. Measured in this one process, on the same weights:

* baseline: ``load_model(checkpoint.pt)``, biotrove's safe weights-only load of the training
  checkpoint (the whole pickle, optimizer state included, then the state-dict fix-ups);
* ours: ``open_clip.create_model("local-dir:BUNDLE")`` on the export (safetensors, no pickle),
  which is also what ``load_model(BUNDLE)`` runs underneath.

Each load figure is the best of ``--repeat`` wall times (model construction included on both
sides). Also printed: the file sizes and their ratio, the export's own time (verification in a
fresh Python included), and the max abs difference of the two models' image embeddings.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def make_checkpoint(path: Path, arch: str) -> None:
    import numpy as np
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(0)
    model = load_model(f"{arch}:random").model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for p in model.parameters():  # optimizer state as after a step, without a forward pass
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.save(
        {
            "epoch": np.int64(40),
            "name": "bench",
            "best_top1": np.float64(0.5),
            "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
        },
        path,
    )


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--arch", default="ViT-B-16")
    ap.add_argument("--dtype", default="fp16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import open_clip
    import torch

    from biotrove_cli.core.models.export import Dtype, ExportConfig, export_model
    from biotrove_cli.core.models.load import load_model

    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / f"{args.arch}-training.pt"
    if not ckpt.is_file():
        make_checkpoint(ckpt, args.arch)
    bundle = args.work / f"{args.arch}-{args.dtype}"
    shutil.rmtree(bundle, ignore_errors=True)

    t0 = time.perf_counter()
    result = export_model(ExportConfig(source=str(ckpt), out=bundle, dtype=Dtype(args.dtype)))
    export_s = time.perf_counter() - t0
    v = result.verification
    assert v is not None and v.passed

    base_s, base = best_of(args.repeat, lambda: load_model(ckpt).model)
    ours_s, ours = best_of(
        args.repeat, lambda: open_clip.create_model(f"local-dir:{bundle}").eval()
    )
    torch.manual_seed(1)
    size = base.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(4, 3, size, size)
    with torch.no_grad():
        diff = float(
            (base.encode_image(pixels, normalize=True) - ours.encode_image(pixels, normalize=True))
            .abs()
            .max()
        )
    ck_mb = ckpt.stat().st_size / 2**20
    bu_mb = sum(p.stat().st_size for p in bundle.iterdir()) / 2**20
    print(f"arch {args.arch}, export dtype {args.dtype}, torch threads {torch.get_num_threads()}")
    print(f"checkpoint {ck_mb:8.1f} MB   bundle {bu_mb:8.1f} MB   size ratio {ck_mb / bu_mb:.2f}x")
    print(f"load  baseline load_model(checkpoint.pt)        {base_s:6.2f} s")
    print(f"load  ours     open_clip local-dir:bundle       {ours_s:6.2f} s")
    print(f"load  speed-up {base_s / ours_s:.2f}x (best of {args.repeat})")
    print(
        f"export {export_s:.1f} s (verify: image {v.image_max_abs_diff:.1e}, "
        f"text {v.text_max_abs_diff:.1e}, tol {v.tolerance:.0e}); image emb max |diff| {diff:.1e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
