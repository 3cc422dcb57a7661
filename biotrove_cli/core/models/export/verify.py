"""Verification: reload the export the way a user would, in a fresh Python process that cannot
import biotrove (and, for ONNX, not torch either), and compare image and text embeddings with the
source model on generated photos and prompts.

The reloading scripts are the standalone files ``check_open_clip.py`` and ``check_onnx.py``
beside this module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import VerificationError
from biotrove_cli.core.layout import ONNX_IMAGE, ONNX_TEXT
from biotrove_cli.core.models.export.config import TOLERANCE, Dtype, Verification
from biotrove_cli.core.processes import guarded_python

log = logging.getLogger("biotrove")

# Generic lineages for verification photos when no label bank gives taxa.
_VERIFY_TAXA = (
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Sturnidae", "Sturnus", "vulgaris"),
    ("Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Vespidae", "Vespula", "vulgaris"),
    ("Animalia", "Chordata", "Mammalia", "Rodentia", "Sciuridae", "Sciurus", "aberti"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus", "alba"),
)


def _verify_taxa(bank: Any) -> list[Any]:
    from biotrove_cli.core.taxonomy.lineage import Taxon

    if bank is not None and not bank.is_custom and len(bank.taxa) >= 1:
        return list(bank.taxa[:4])
    return [Taxon.from_parts(*names) for names in _VERIFY_TAXA]


def _inputs(taxa: list[Any], scratch: Path) -> tuple[list[Path], list[str]]:
    """Generated photos (PNG, lossless) and prompts for comparing embeddings."""
    from biotrove_cli.core.data.world import render
    from biotrove_cli.core.taxonomy.captions import caption_body

    images = []
    for i, taxon in enumerate(taxa):
        p = scratch / f"photo-{i}.png"
        render(taxon, index=i, seed=7, size=(96, 80)).save(p)
        images.append(p)
    texts = [f"a photo of {caption_body(t, 'taxon')}." for t in taxa]
    texts.append(f"a photo of {taxa[0].common_name or taxa[0].binomial}, a living thing.")
    return images, texts


def _reference(source: Any, images: list[Path], texts: list[str]):
    import torch
    from PIL import Image

    model = source.model.to("cpu").eval()
    with torch.inference_mode():
        pixels = torch.stack([source.preprocess(Image.open(p).convert("RGB")) for p in images])
        tokens = source.tokenizer(texts)
        image = model.encode_image(pixels, normalize=True).float()
        text_emb = model.encode_text(tokens, normalize=True).float()
    return pixels, tokens, image, text_emb


def _script(name: str) -> str:
    """The text of a verification child script beside this module.

    It runs through ``-c``, not by its path: Python puts a script's folder first on sys.path
    (before 3.11's ``-P``), where this package's ``onnx.py`` and ``open_clip.py`` would shadow
    the real packages.
    """
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


def _run_python(script: str, args: list[str], cwd: Path, what: str, timeout: float = 1800) -> None:
    """Run ``script`` in a fresh, isolated Python (``-I``: no cwd, no PYTHONPATH on sys.path)."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # an export needs no network; prove it
    try:
        proc = subprocess.run(
            guarded_python(script, args),  # it ends with this process, even after kill -9
            cwd=str(cwd),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(
            f"verification failed: {what} did not finish within {timeout:.0f} s",
            hint="--no-verify writes the export unchecked",
        ) from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        if proc.returncode < 0:
            why = f"crashed with signal {-proc.returncode}"
        else:
            why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        log.debug(proc.stderr)
        raise VerificationError(
            f"verification failed: {what} cannot load the export ({why[:300]}); nothing was "
            "written",
            hint="rerun with -v for the reloading process's output; --no-verify writes the "
            "export unchecked",
        )


def _max_diff(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def verify_open_clip(folder: Path, source: Any, dtype: Dtype, taxa: list[Any]) -> Verification:
    """Reload ``folder`` with stock open_clip (``local-dir:``) in a Python that cannot import
    biotrove, and compare its preprocessing, tokens and embeddings with the source model."""
    from safetensors.torch import load_file

    method = "stock open_clip local-dir: in a fresh Python without biotrove"
    log.info(f"verifying: {method}")
    with tempfile.TemporaryDirectory(prefix="biotrove-verify-") as scratch_name:
        scratch = Path(scratch_name)
        images, texts = _inputs(taxa, scratch)
        (scratch / "inputs.json").write_text(
            json.dumps({"images": [str(p) for p in images], "texts": texts}), encoding="utf-8"
        )
        _run_python(
            _script("check_open_clip.py"),
            [str(folder), str(scratch / "inputs.json"), str(scratch / "out.safetensors")],
            scratch,
            "stock open_clip",
        )
        got = load_file(str(scratch / "out.safetensors"))
        pixels, tokens, image, text_emb = _reference(source, images, texts)
    if got["tokens"].shape != tokens.shape or not bool((got["tokens"] == tokens).all()):
        raise VerificationError(
            "verification failed: the export's tokenizer (open_clip local-dir:) tokenizes "
            "differently from the source model's; nothing was written",
            hint="the source uses a tokenizer open_clip cannot rebuild from the bundle config",
        )
    pixel_diff = _max_diff(got["pixels"], pixels)
    tol = TOLERANCE[dtype]
    v = Verification(
        method=method,
        images=len(images),
        texts=len(texts),
        image_max_abs_diff=_max_diff(got["image"], image),
        text_max_abs_diff=_max_diff(got["text"], text_emb),
        tolerance=tol,
        passed=False,
        pixel_max_abs_diff=pixel_diff,
    )
    v.passed = v.image_max_abs_diff <= tol and v.text_max_abs_diff <= tol and pixel_diff <= 1e-4
    return v


def verify_onnx(
    folder: Path, source: Any, taxa: list[Any], *, quantized: bool = False
) -> Verification:
    """Run the ONNX encoders with onnxruntime in a Python that cannot import torch (nor
    biotrove), on a batch size other than the exported one, and compare with the source.

    An int8 image encoder (``quantized``) is judged by top-1 agreement
    (:func:`verify_agreement.measure_agreement`), not by its embeddings' difference, which is
    reported; the text encoder (fp32) must match to the tolerance either way."""
    import numpy as np
    import torch

    method = "onnxruntime (CPU) in a fresh Python without torch"
    log.info(f"verifying: {method}")
    with tempfile.TemporaryDirectory(prefix="biotrove-verify-") as scratch_name:
        scratch = Path(scratch_name)
        images, texts = _inputs(taxa, scratch)
        pixels, tokens, image, text_emb = _reference(source, images, texts)
        np.savez(
            scratch / "inputs.npz",
            pixels=pixels.numpy().astype(np.float32),
            tokens=tokens.numpy().astype(np.int64),
        )
        _run_python(
            _script("check_onnx.py"),
            [
                str(folder / ONNX_IMAGE),
                str(folder / ONNX_TEXT),
                str(scratch / "inputs.npz"),
                str(scratch / "out.npz"),
            ],
            scratch,
            "onnxruntime",
        )
        with np.load(scratch / "out.npz") as got:
            got_image = torch.from_numpy(got["image"].copy())
            got_text = torch.from_numpy(got["text"].copy())
    tol = TOLERANCE[Dtype.fp32]
    v = Verification(
        method=method,
        images=len(images),
        texts=len(texts),
        image_max_abs_diff=_max_diff(got_image, image),
        text_max_abs_diff=_max_diff(got_text, text_emb),
        tolerance=tol,
        passed=False,
    )
    v.passed = (quantized or v.image_max_abs_diff <= tol) and v.text_max_abs_diff <= tol
    return v


def _report_or_raise(v: Verification, dtype: Dtype) -> None:
    """Say "verified" only for an export that passed; raise for one that did not (a NaN or
    infinite difference, from a model that gives non-finite embeddings, never passes)."""
    diffs = (
        f"image max |diff| {v.image_max_abs_diff:.2e}, text max |diff| "
        f"{v.text_max_abs_diff:.2e}, tolerance {v.tolerance:.0e} for {dtype.value}"
    )
    if not all(math.isfinite(d) for d in (v.image_max_abs_diff, v.text_max_abs_diff)):
        raise VerificationError(
            f"verification failed: the embeddings hold NaN or infinity ({diffs}); nothing "
            "was written",
            hint="the model overflows at this precision or its weights are broken: export "
            "--dtype fp32, or another checkpoint",
        )
    if v.agreement is not None and v.agreement < (v.min_agreement or 0.0):
        raise VerificationError(
            f"verification failed: the ONNX bundle gives the fp32 model's top-1 class for "
            f"{v.agreement:.1%} of {v.agreement_images} photos, below --min-agreement "
            f"{v.min_agreement:g}; nothing was written",
            hint="calibrate on your own photos (--calibration PHOTOS/), export without "
            "--quantize, or lower --min-agreement",
        )
    if not v.passed:
        raise VerificationError(
            f"verification failed: the reloaded export differs from the source ({diffs}); "
            "nothing was written",
            hint="check the architecture (--arch, QuickGELU) or export --dtype fp32; "
            "--no-verify writes the export unchecked",
        )
    agreement = (
        f"; top-1 agreement {v.agreement:.1%} on {v.agreement_images} photos"
        if v.agreement is not None
        else ""
    )
    log.info(
        f"verified ({v.method}): image max |diff| {v.image_max_abs_diff:.2e}, text max |diff| "
        f"{v.text_max_abs_diff:.2e} (tolerance {v.tolerance:.0e} for {dtype.value}){agreement}"
    )
