"""Top-1 agreement of an ONNX bundle with its fp32 PyTorch source: the photos (``--calibration``
or generated ones) decoded once, as ``classify`` decodes them; the source scores them with
open_clip's preprocessing and PyTorch, the bundle with biotrove's ONNX backend (numpy
preprocessing, onnxruntime, int8 if quantised); both over the same class embeddings (the
bundled label bank's, else prompts of a few generic taxa). The fraction of photos whose best
class is the same is the agreement; ``--min-agreement`` is its floor."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.models.export.config import Verification

log = logging.getLogger("biotrove")

#: Photos the agreement is measured on, at most; generated photos when none are given.
MAX_PHOTOS = 500
GENERATED = 48


def _class_weights(onnx: Any, source: Any) -> Any:
    """[C, D] numpy: the bundled class embeddings, else the source's for generic taxa."""
    import numpy as np

    if onnx.class_embeddings:
        return np.asarray(onnx.class_embeddings["tensors"]["embeddings"], dtype=np.float32)
    from biotrove_cli.core.evaluation.text import class_prompts, encode_prompts
    from biotrove_cli.core.models.export.verify import _VERIFY_TAXA
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.lineage import Taxon
    from biotrove_cli.core.taxonomy.rank import Rank

    bank = LabelBank(taxa=[Taxon.from_parts(*names) for names in _VERIFY_TAXA])
    prompts = class_prompts(bank, Rank.SPECIES, "taxon", ["a photo of {}."])
    return encode_prompts(source, prompts).numpy()


def _generated(scratch: Path, bank: Any) -> list[str]:
    """Photos rendered for the bundle's species (or generic taxa), JPEG like field photos."""
    from biotrove_cli.core.data.world import render
    from biotrove_cli.core.models.export.verify import _verify_taxa

    taxa = _verify_taxa(None) if bank is None or bank.is_custom else list(bank.taxa)
    paths = []
    for i in range(GENERATED):
        p = scratch / f"agree-{i}.jpg"
        render(taxa[i % len(taxa)], index=i, seed=11, size=(320, 240)).save(p, quality=90)
        paths.append(str(p))
    return paths


def _top1(feats: Any, weights: Any) -> list[int]:
    return (feats @ weights.T).argmax(axis=1).tolist()


def measure_agreement(
    v: Verification, folder: Path, source: Any, photos: Sequence[str] | None, minimum: float
) -> None:
    """Fill ``v``'s agreement fields (and fail ``v`` below ``minimum``)."""
    import numpy as np
    import torch

    from biotrove_cli.core.data.images import ImageError, decode, read_bytes
    from biotrove_cli.core.models.onnx.encoder import OnnxImageEncoder
    from biotrove_cli.core.models.onnx.model import load_onnx

    onnx = load_onnx(folder, str(folder))
    encoder = OnnxImageEncoder(onnx)
    weights = _class_weights(onnx, source)
    model = source.model.to("cpu").float().eval()
    agree = total = 0
    with tempfile.TemporaryDirectory(prefix="biotrove-agree-") as scratch:
        paths = list(photos)[:MAX_PHOTOS] if photos else _generated(Path(scratch), onnx.labels)
        for start in range(0, len(paths), 16):
            ref, ours = [], []
            for p in paths[start : start + 16]:
                try:
                    size = onnx.image_size
                    img = decode(read_bytes(p), source=p, draft=(size, size)).image
                except ImageError:
                    continue
                ref.append(source.preprocess(img))
                ours.append(onnx.preprocess(img))
            if not ref:
                continue
            with torch.inference_mode():
                feats = model.encode_image(torch.stack(ref), normalize=True).float().numpy()
            got = encoder(np.stack(ours))
            a, b = _top1(feats, weights), _top1(got, weights)
            agree += sum(x == y for x, y in zip(a, b, strict=True))
            total += len(a)
    v.agreement = agree / total if total else 0.0
    v.agreement_images = total
    v.min_agreement = minimum
    v.passed = v.passed and v.agreement >= minimum
    log.info(f"top-1 agreement with the fp32 PyTorch model: {v.agreement:.1%} of {total} photos")
