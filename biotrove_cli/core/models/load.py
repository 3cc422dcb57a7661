"""``load_model(spec)``: one entry point for every way a user names a model.

The spec is parsed first (:func:`spec.parse_model_spec`, which lists the accepted forms), then
handed to the loader of its kind (:mod:`loaders`). A spec that names nothing loadable gets a
message saying what it is and what to pass instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import BiotroveError, InputError, UsageError
from biotrove_cli.core.layout import BUNDLE_CONFIG, CHECKPOINT_DIR
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.loaders import (
    load_arch_file,
    load_bundle,
    load_checkpoint_file,
    load_hf_hub,
    load_pretrained,
    load_random,
    load_run_dir,
    load_safetensors,
)
from biotrove_cli.core.models.published import load_preset
from biotrove_cli.core.models.spec import ModelSpec, SpecKind, parse_model_spec

log = logging.getLogger("biotrove")


def load_model(spec: str | Path, *, arch: str | None = None, device: str = "cpu") -> Any:
    """Load any model a user can name (see :mod:`spec`), ready for inference.

    Args:
        spec: what the user passed (``--model`` / CHECKPOINT).
        arch: the open_clip architecture of bare weights (``--arch``), when not inferred.
        device: where the model goes.

    Returns:
        a :class:`LoadedModel`, or for an ONNX bundle an
        :class:`~biotrove_cli.core.models.onnx.model.OnnxModel` (onnxruntime, no torch).

    Raises:
        ModelLoadError (and subclasses): with a hint naming what to do next.
        InputError, UsageError: the spec names nothing loadable.
    """
    s = parse_model_spec(spec)
    if s.kind is SpecKind.ONNX:
        from biotrove_cli.core.models.onnx.model import load_onnx

        if str(device) != "cpu":
            raise UsageError(
                f"{s.path}: an ONNX bundle runs on the CPU (onnxruntime), not on {device}",
                hint="use --device cpu (or auto), or the open_clip export for a GPU",
            )
        if arch is not None:
            log.info("--arch is ignored for an ONNX bundle (its config names the architecture)")
        return load_onnx(s.path, s.text)
    match s.kind:
        case SpecKind.BUNDLE:
            return load_bundle(s.file, s.text, device)
        case SpecKind.RUN:
            return load_run_dir(s.file, s.text, device, arch)
        case SpecKind.SAFETENSORS:
            return load_safetensors(s.file, s.text, device, arch)
        case SpecKind.CHECKPOINT:
            return load_checkpoint_file(s.file, s.text, device, arch)
        case SpecKind.PRESET if s.preset is not None:
            return load_preset(s.preset, s.text, device, arch)
        case SpecKind.HF_HUB:
            return load_hf_hub(s.text, device)
        case SpecKind.RANDOM:
            return load_random(s.arch, s.tag, s.text, device)
        case SpecKind.ARCH_FILE:
            return load_arch_file(s.arch, s.file, s.text, device)
        case SpecKind.PRETRAINED:
            return load_pretrained(s.arch, s.tag, s.text, device)
    raise not_loadable(s)


def not_loadable(s: ModelSpec) -> BiotroveError:
    """The error for a spec that names nothing biotrove loads (ONNX, a folder, nothing)."""
    if s.kind is SpecKind.FOLDER:
        return InputError(
            f"{s.path}: is neither an exported model folder nor a run folder",
            hint=f"a bundle holds {BUNDLE_CONFIG}; a run holds {CHECKPOINT_DIR}/",
        )
    if registry.arch_config(s.text) is not None:
        return UsageError(
            f"{s.text!r} names an architecture, not weights",
            hint=f"use {s.text}:TAG for pretrained weights (e.g. ViT-B-16:openai), "
            f"{s.text}:random for random ones, or a checkpoint file",
        )
    what = (
        "no such file or folder"
        if s.looks_like_path
        else "not a file, a folder, a BioTrove-CLIP model or an open_clip tag"
    )
    return InputError(
        f"{s.text}: {what}",
        hint="pass a checkpoint (.pt), an exported folder, a run folder, clip-o/clip-b/clip-m, "
        "hf-hub:org/repo or ARCH:TAG (e.g. ViT-B-16:openai)",
    )
