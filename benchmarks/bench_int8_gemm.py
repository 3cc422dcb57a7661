"""What int8 can gain on this CPU: ViT-B-16's matrix products on onnxruntime, fp32 against int8.

    python benchmarks/bench_int8_gemm.py [--batch 16] [--repeat 5] [--no-naive]

ViT-B-16's image tower spends nearly all its time in four matrix products per layer (qkv
768x2304, out 768x768, fc1 768x3072, fc2 3072x768, over 197 tokens per image). This times
them at ``--batch`` images, in this same process:

* PyTorch fp32 (``torch.nn.functional.linear``, torch's default threads): the baseline;
* onnxruntime fp32 ``MatMul``;
* onnxruntime int8, dynamic quantisation per channel (what ``biotrove export --quantize int8``
  writes): weights in 8 bits (full range) and in 7 bits (``reduce_range``, what biotrove uses),
  and uint8 weights.

For each it prints GOP/s, the ratio over PyTorch fp32, and the error against fp32 (max abs
difference over max abs value). It then prints the ceiling these rates put on a whole image
tower: the images/s if the four products were *all* the work, next to a naive per-image
PyTorch loop (``encode_image`` of one 224x224 image, seeded random weights; ``--no-naive``
skips it). Without VNNI or AMX (``avx512_vnni``/``avx_vnni``/``amx_int8`` in
``/proc/cpuinfo``), int8 products run on ``vpmaddubsw``, at most about twice fp32's rate,
and full-range int8 weights saturate its int16 sums: the error column shows it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

#: (K, N) of ViT-B-16's per-layer products; each runs once per layer over every token.
SHAPES = {"qkv": (768, 2304), "out": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}
TOKENS, LAYERS = 197, 12


def cpu_flags() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown"
    found = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return " ".join(found) or "none of avx2/avx512/vnni/amx"


def matmul_model(path: Path, weight) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t0) / repeat, out


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def naive_rate(n: int = 6) -> float:
    """Images/s of ``encode_image`` on one image at a time (ViT-B-16, random weights)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        seconds, _ = timed(lambda: model.encode_image(x), n)
    return 1.0 / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16, help="images per product (rows = 197 x)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-naive", action="store_true", help="skip the per-image PyTorch loop")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # onnxruntime's quantiser suggests pre-processing
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rows = TOKENS * args.batch
    rng = np.random.default_rng(0)
    variants = {
        "onnxruntime fp32": None,
        "onnxruntime int8, 8-bit weights": dict(weight_type=QuantType.QInt8),
        "onnxruntime int8, 7-bit weights (biotrove)": dict(
            weight_type=QuantType.QInt8, reduce_range=True
        ),
        "onnxruntime int8, uint8 weights": dict(weight_type=QuantType.QUInt8),
    }
    seconds = {"PyTorch fp32": 0.0, **{k: 0.0 for k in variants}}
    errors = {k: 0.0 for k in seconds}
    macs = 0
    print(
        f"CPU flags: {cpu_flags()}; onnxruntime {ort.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {args.batch} images = {rows} rows\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, (k, n) in SHAPES.items():
            weight = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
            x = rng.standard_normal((rows, k)).astype(np.float32)
            macs += k * n
            wt, xt = torch.from_numpy(weight.T.copy()), torch.from_numpy(x)
            with torch.no_grad():
                s, ref = timed(lambda xt=xt, wt=wt: torch.nn.functional.linear(xt, wt), args.repeat)
            ref = ref.numpy()
            seconds["PyTorch fp32"] += s
            fp32 = Path(tmp) / f"{name}.onnx"
            matmul_model(fp32, weight)
            for label, options in variants.items():
                path = fp32
                if options is not None:
                    path = Path(tmp) / f"{name}-{list(variants).index(label)}.onnx"
                    quantize_dynamic(str(fp32), str(path), per_channel=True, **options)
                sess = ort_session(path)
                s, out = timed(lambda sess=sess, x=x: sess.run(None, {"x": x})[0], args.repeat)
                seconds[label] += s
                err = float(np.abs(out - ref).max() / np.abs(ref).max())
                errors[label] = max(errors[label], err)
    ops = 2 * rows * macs
    base = seconds["PyTorch fp32"]
    print("per layer (qkv, out, fc1, fc2)                 GOP/s   ratio   error vs fp32")
    for label, s in seconds.items():
        print(f"{label:45s} {ops / s / 1e9:7.1f}   x{base / s:.2f}   {errors[label]:.4f}")
    per_image = 2 * TOKENS * macs * LAYERS  # the four products, all 12 layers, one image
    print(f"\nceiling on a whole ViT-B-16 image tower ({per_image / 1e9:.1f} GOP/image in these")
    print("products; attention, norms and GELU come on top):")
    naive = None if args.no_naive else naive_rate()
    for label, s in seconds.items():
        ceiling = args.batch / (s * LAYERS)
        versus = f"   x{ceiling / naive:.2f} the naive loop" if naive else ""
        print(f"  {label:45s} at most {ceiling:5.1f} images/s{versus}")
    if naive:
        print(f"  {'naive loop (PyTorch fp32, one image at a time)':45s} {naive:14.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
