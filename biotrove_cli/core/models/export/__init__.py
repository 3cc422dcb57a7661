"""``biotrove export``: any model :func:`load.load_model` accepts -> a safe, portable, verified
bundle.

Formats:

* ``open_clip``: ``open_clip_config.json`` + ``open_clip_model.safetensors``, which stock
  ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads with no biotrove installed
  (the architecture config, QuickGELU included, travels in the JSON), plus ``biotrove.json``
  (provenance). No optimizer state, no pickle.
* ``onnx``: ``image_encoder.onnx`` and ``text_encoder.onnx`` (L2-normalised embeddings, dynamic
  batch axis) and ``onnx_config.json`` (input shapes, preprocessing, logit scale), for
  deployment without PyTorch.

With a label bank, ``labels.parquet`` and ``class_embeddings.safetensors`` are bundled too: the
class text embeddings, encoded once by the fp32 source model and keyed (``prompts_key``) by the
text tower *as it reloads from the bundle*, so ``biotrove classify --model DIR`` uses them with
no label file and no text encoding.

Everything is written into a hidden temp folder beside ``--out`` and renamed into place only
when complete (and verified); with ``force`` an older export is replaced only after the new one
is complete. Verification reloads the export the way a user would, in a fresh Python process that
cannot import biotrove (and, for ONNX, not torch either), and compares image and text embeddings
with the source model on generated photos and prompts.
"""

from __future__ import annotations

from biotrove_cli.core.models.export.config import (
    TOLERANCE,
    Dtype,
    ExportConfig,
    ExportFormat,
    ExportResult,
    Verification,
)
from biotrove_cli.core.models.export.entry import export_model

__all__ = [
    "TOLERANCE",
    "Dtype",
    "ExportConfig",
    "ExportFormat",
    "ExportResult",
    "Verification",
    "export_model",
]
