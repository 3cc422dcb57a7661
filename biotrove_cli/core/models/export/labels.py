"""The bundled label bank: ``labels.parquet`` and ``class_embeddings.safetensors``, the class
text embeddings, encoded once by the fp32 source model and keyed (``prompts_key``) by the text
tower *as it reloads from the bundle*, so ``biotrove classify --model DIR`` uses them with no
label file and no text encoding."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import VerificationError
from biotrove_cli.core.layout import BUNDLE_EMBEDDINGS, BUNDLE_LABELS
from biotrove_cli.core.models.export.config import ExportFormat
from biotrove_cli.core.runtime import ProgressFn

log = logging.getLogger("biotrove")


def _write_labels(
    tmp: Path,
    source: Any,
    bank: Any,
    *,
    fmt: ExportFormat,
    text_type: str,
    templates_name: str,
    templates: Sequence[str],
    device: str,
    batch_size: int,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """labels.parquet + class_embeddings.safetensors, keyed for the bundle's own text tower."""
    from safetensors.torch import save_file

    from biotrove_cli.core.evaluation import text
    from biotrove_cli.core.models.loaders import load_bundle, load_class_embeddings
    from biotrove_cli.core.taxonomy.rank import Rank

    prompts = text.class_prompts(bank, Rank.SPECIES, text_type, templates)
    if fmt is ExportFormat.open_clip:
        # The key must be what a user's load_model(DIR) computes: the text tower as it reloads
        # from the bundle (fp16/bf16 rounding changes its weights, hence its fingerprint).
        reloaded = load_bundle(tmp, str(tmp), "cpu")
        fingerprint = reloaded.text_fingerprint()
    else:
        reloaded = None
        fingerprint = source.text_fingerprint()  # ONNX weights are the fp32 source's
    key = text.cache_key(fingerprint, prompts)
    log.info(f"encoding {sum(len(p) for p in prompts)} prompts for {len(prompts)} classes")
    model_device = source.device
    try:
        if str(device) != str(model_device):
            source.model.to(device)
        # trimmed to each batch's longest prompt: the same embeddings, several times faster
        emb = text.encode_prompts(
            source, prompts, batch_size=batch_size, progress=progress, trim=True
        )
    finally:
        source.model.to(model_device)
    bank.save(tmp / BUNDLE_LABELS)
    meta = {
        "prompts_key": key,
        "text_type": text_type if not bank.is_custom else "custom",
        "templates": templates_name,
        "template_strings": json.dumps(list(templates)),
        "rank": "label" if bank.is_custom else "species",
        "classes": str(len(prompts)),
        "encoded_by": "the fp32 source model",
    }
    save_file({"embeddings": emb.float().contiguous()}, str(tmp / BUNDLE_EMBEDDINGS), metadata=meta)
    if reloaded is not None:
        # read it back as load_bundle will: classify must find these embeddings by their key
        reloaded.class_embeddings = load_class_embeddings(tmp / BUNDLE_EMBEDDINGS)
        if text.bundled_embeddings(reloaded, key, len(prompts)) is None:  # pragma: no cover
            raise VerificationError(
                "the bundled class embeddings do not read back under their prompts key",
                hint="this is a bug in biotrove export; report it",
            )
    return {
        "classes": len(prompts),
        "source": str(bank.source),
        "text_type": meta["text_type"],
        "templates": templates_name,
        "prompts_key": key,
    }
