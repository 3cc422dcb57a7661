"""The ONNX format: ``image_encoder.onnx`` and ``text_encoder.onnx`` (L2-normalised embeddings,
dynamic batch axis) and ``onnx_config.json`` (input shapes, preprocessing, logit scale), for
deployment without PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import BiotroveError
from biotrove_cli.core.fmt import plain
from biotrove_cli.core.layout import ONNX_CONFIG, ONNX_IMAGE, ONNX_TEXT

ONNX_OPSET = 17
log = logging.getLogger("biotrove")


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _require_onnx() -> None:
    if not _have("onnx"):
        raise BiotroveError(
            "--format onnx needs the onnx package, which is not installed",
            hint="pip install 'biotrove[onnx]' (onnx and onnxruntime)",
        )


def _encoders(model: Any):
    import torch
    import torch.nn.functional as F

    class ImageEncoder(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return F.normalize(self.m.encode_image(pixel_values), dim=-1)

    class TextEncoder(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return F.normalize(self.m.encode_text(input_ids), dim=-1)

    return ImageEncoder(model).eval(), TextEncoder(model).eval()


def _export(module: Any, example: Any, path: Path, input_name: str, output_name: str) -> None:
    """One encoder traced to ONNX, with a dynamic batch axis on its input and output."""
    import torch

    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=ONNX_OPSET,
    )


def _write_onnx(tmp: Path, source: Any) -> None:
    """Both encoders as checked ONNX graphs (fp32, dynamic batch) and ``onnx_config.json``."""
    import warnings

    import torch

    from biotrove_cli.core.io import atomic_write_json
    from biotrove_cli.core.models.export.attention import export_attention

    model = source.model.to("cpu").float().eval()
    image_enc, text_enc = _encoders(model)
    size = source.image_size
    pixels = torch.zeros(2, 3, size, size)
    tokens = source.tokenizer(["a photo of a bird.", "a photo of a plant."])
    try:
        # no torch.no_grad() here: under it nn.MultiheadAttention takes its fused fast path,
        # whose op (aten::_native_multi_head_attention) has no ONNX export
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings are not for users
            with export_attention(getattr(model, "visual", image_enc)) as swapped:
                log.debug("image tower: %d attention blocks exported as ExportAttention", swapped)
                _export(image_enc, pixels, tmp / ONNX_IMAGE, "pixel_values", "image_embeddings")
            _export(text_enc, tokens, tmp / ONNX_TEXT, "input_ids", "text_embeddings")
        import onnx

        for name in (ONNX_IMAGE, ONNX_TEXT):
            onnx.checker.check_model(str(tmp / name))
    except (RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BiotroveError(
            f"ONNX export of {source.arch} failed ({first[:300]})",
            hint="export --format open_clip instead; rerun with BIOTROVE_DEBUG=1 for details",
        ) from exc
    config = _onnx_config(source, model, image_enc(pixels[:1]))
    config["tokenizer"] = _bundle_tokenizer(tmp, source)
    atomic_write_json(tmp / ONNX_CONFIG, config)


def _bundle_tokenizer(tmp: Path, source: Any) -> dict[str, Any] | None:
    """Copy open_clip's BPE merges into the bundle when biotrove's torch-free tokenizer
    tokenizes exactly as the source model's does (on probe texts); else None (the bundle then
    classifies into its bundled labels only)."""
    import shutil

    from open_clip.tokenizer import default_bpe

    from biotrove_cli.core.models.loaded import _TOKENIZER_PROBES
    from biotrove_cli.core.models.onnx.model import TOKENIZER_DIR
    from biotrove_cli.core.models.onnx.tokenizer import VOCAB_NAME, ClipTokenizer

    probes = [*_TOKENIZER_PROBES, "a photo of Quercus alba, white oak.", "Ærø <end_of_text> x"]
    try:
        ours = ClipTokenizer(Path(default_bpe()), source.context_length)(probes)
        theirs = source.tokenizer(probes).numpy()
    except Exception as exc:  # an HF tokenizer, another context length...: no bundled one
        log.info("the ONNX bundle gets no tokenizer (%s)", exc)
        return None
    if ours.shape != theirs.shape or not (ours == theirs).all():
        log.info("the ONNX bundle gets no tokenizer: the model's is not CLIP's BPE")
        return None
    (tmp / TOKENIZER_DIR).mkdir()
    shutil.copyfile(default_bpe(), tmp / TOKENIZER_DIR / VOCAB_NAME)
    return {"kind": "clip_bpe", "vocab": f"{TOKENIZER_DIR}/{VOCAB_NAME}", "clean": "lower"}


def _onnx_config(source: Any, model: Any, image_embedding: Any) -> dict[str, Any]:
    """``onnx_config.json``: file names, input shapes, preprocessing and logit scale."""
    import torch

    size = source.image_size
    with torch.no_grad():
        logit_scale = float(model.logit_scale.exp())
    return plain(
        {
            "image_encoder": ONNX_IMAGE,
            "text_encoder": ONNX_TEXT,
            "opset": ONNX_OPSET,
            "inputs": {
                "pixel_values": {"shape": ["batch", 3, size, size], "dtype": "float32"},
                "input_ids": {"shape": ["batch", source.context_length], "dtype": "int64"},
            },
            "outputs": {
                "image_embeddings": "L2-normalised [batch, embed_dim] float32",
                "text_embeddings": "L2-normalised [batch, embed_dim] float32",
            },
            "embed_dim": int(image_embedding.shape[-1]),
            "logit_scale": logit_scale,
            "preprocess_cfg": dict(source.preprocess_cfg),
            # the PyTorch text tower's identity: the key of the bundled class embeddings
            "text_fingerprint": source.text_fingerprint(),
            "quantization": None,
            "model_cfg": dict(source.model_cfg),
        },
        strict=True,
    )
