"""Verification child of the ONNX format, run by :mod:`verify` as
``python -I -c <this file's text> IMAGE.onnx TEXT.onnx INPUTS.npz OUT.npz``.

It runs in a fresh Python that can import neither torch nor biotrove (deployment without
PyTorch). So it stays standalone (numpy and onnxruntime only), and it does its work only as
``__main__``.
"""

from __future__ import annotations

import sys


def main(image_encoder: str, text_encoder: str, inputs: str, out: str) -> None:
    """Run both encoders on the pixels and tokens in ``inputs``; save the embeddings to ``out``."""
    sys.modules["torch"] = None  # type: ignore[assignment]  # deployment without PyTorch
    sys.modules["biotrove_cli"] = None  # type: ignore[assignment]
    import numpy as np
    import onnxruntime as ort

    data = np.load(inputs)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ep = ["CPUExecutionProvider"]
    image = ort.InferenceSession(image_encoder, opts, providers=ep)
    text = ort.InferenceSession(text_encoder, opts, providers=ep)
    np.savez(
        out,
        image=image.run(None, {"pixel_values": data["pixels"]})[0],
        text=text.run(None, {"input_ids": data["tokens"]})[0],
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
