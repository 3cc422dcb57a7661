"""int8 quantisation of an ONNX bundle's image encoder, with onnxruntime's quantisation tools.

* dynamic (no photos): weights int8 per channel, activations quantised on the fly per batch:
  every MatMul/Gemm of the transformer becomes an integer product (most of a ViT's time);
* static (``--calibration PHOTOS``): activation ranges calibrated on the photos (preprocessed
  as the bundle preprocesses), QDQ format.

Weights use 7 of their 8 bits (``reduce_range``). On x86 CPUs without VNNI (AVX2 laptops,
AMD before Zen 4), onnxruntime multiplies uint8 activations by int8 weights with
``vpmaddubsw``, which adds pairs of products into int16 and saturates when both are near full
range: with full-range per-channel weights ViT-B-16's embeddings drifted to cosine 0.989 from
fp32 and top-1 agreement fell to 81% (0.9998 and 96.5% with 7 bits; same speed, measured by
``benchmarks/bench_int8_gemm.py``). A bundle runs on CPUs its exporter never saw, so the safe
range is always used.

The text encoder stays fp32: it runs once per label bank, not once per photo. The bundle's
``onnx_config.json`` records the method under ``quantization``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import BiotroveError
from biotrove_cli.core.layout import ONNX_IMAGE

log = logging.getLogger("biotrove")

#: Calibration photos used at most (static quantisation's histograms grow with them).
MAX_CALIBRATION = 200


def _decoded(paths: Sequence[str], preprocess: Any, size: int) -> list[Any]:
    """The photos decoded as ``classify`` decodes them (draft JPEG near ``size``), preprocessed;
    unreadable ones skipped."""
    from biotrove_cli.core.evaluation.decode import load_file

    out = []
    for p in paths:
        image, reason = load_file((p,), preprocess, size)
        if image is None:
            log.warning("%s: skipped for calibration (%s)", p, reason)
            continue
        out.append(image)
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader over preprocessed photos, a few at a time."""

    def __init__(self, images: list[Any], batch: int = 8):
        import numpy as np

        self.batches = iter([np.stack(images[i : i + batch]) for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, Any] | None:
        x = next(self.batches, None)
        return None if x is None else {"pixel_values": x}


def quantize_image_encoder(
    tmp: Path, photos: Sequence[str] | None, preprocess_cfg: dict[str, Any]
) -> dict[str, Any]:
    """Replace ``tmp/image_encoder.onnx`` by its int8 version; returns what was done.

    Args:
        photos: calibration photos (static quantisation), or None (dynamic).
        preprocess_cfg: the model's (what the bundle's ``onnx_config.json`` records), to
            preprocess the calibration photos as the bundle will.

    Raises:
        BiotroveError: onnxruntime cannot quantise this graph, or no photo is readable.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from biotrove_cli.core.models.onnx.preprocess import NumpyPreprocess

    fp32 = tmp / ONNX_IMAGE
    pre = tmp / "image_encoder.pre.onnx"
    out = tmp / "image_encoder.int8.onnx"
    info: dict[str, Any] = {"dtype": "int8", "weights": "int8 per channel, 7-bit range"}
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        if photos:
            prep = NumpyPreprocess(preprocess_cfg)
            images = _decoded(list(photos)[:MAX_CALIBRATION], prep, prep.size)
            if not images:
                raise BiotroveError(
                    "--calibration: none of the photos is readable",
                    hint="pass a folder of JPEG/PNG photos, or leave --calibration out "
                    "(dynamic quantisation)",
                )
            quantize_static(
                str(pre),
                str(out),
                _Reader(images),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
            )
            info.update(method="static", calibration_photos=len(images))
        else:
            quantize_dynamic(
                str(pre),
                str(out),
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
            info.update(method="dynamic", calibration_photos=0)
    except BiotroveError:
        raise
    except Exception as exc:  # onnxruntime's quantiser raises many kinds
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BiotroveError(
            f"int8 quantisation failed ({first[:300]})",
            hint="export without --quantize (fp32 ONNX); rerun with BIOTROVE_DEBUG=1 for details",
        ) from exc
    finally:
        pre.unlink(missing_ok=True)
    os.replace(out, fp32)
    log.info("quantised the image encoder to int8 (%s)", info["method"])
    return info
