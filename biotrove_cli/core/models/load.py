"""``load_model(spec)``: one entry point for every way a user names a model.

Accepted specs, tried in this order:

1. an exported bundle folder (``open_clip_config.json`` + weights, from ``biotrove export``);
2. a biotrove run folder (its latest complete checkpoint, config and label bank);
3. a checkpoint file (``.pt``/``.pth``/``.bin``: open_clip training checkpoints with or without
   ``module.`` prefixes, optimizer state ignored; ``.safetensors`` beside a config or with
   ``arch=``);
4. a BioTrove-CLIP model by preset (``clip-o``, ``clip-b``, ``clip-m``) or published file name,
   looked up in :func:`registry.models_dir` (``$BIOTROVE_HOME/models``);
5. ``hf-hub:org/repo`` and open_clip ``ARCH:TAG`` pretrained tags, from the local cache only
   when offline; ``ARCH:random`` builds random weights (benchmarks, smoke tests);
6. ``ARCH:/path/to/file.pt`` loads a file into a named architecture.

Checkpoint loading is weights-only (see :mod:`checkpoint`). The architecture of a bare state dict
is inferred from its tensor shapes; QuickGELU comes from the source (the stored config, the
BioTrove preset, the bundle config, or ``arch=``), and the reason is recorded.
"""

from __future__ import annotations

from pathlib import Path

from biotrove_cli.core.errors import InputError, ModelLoadError, UsageError
from biotrove_cli.core.layout import (
    BUNDLE_CONFIG,
    CHECKPOINT_DIR,
    is_bundle_dir,
    is_onnx_dir,
    is_run_dir,
)
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.loaded import LoadedModel
from biotrove_cli.core.models.loaders import (
    _load_safetensors,
    load_bundle,
    load_checkpoint_file,
    load_hf_hub,
    load_pretrained,
    load_run_dir,
)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_model(spec: str | Path, *, arch: str | None = None, device: str = "cpu") -> LoadedModel:
    """Load any model a user can name (see the module docstring), ready for inference.

    Raises:
        ModelLoadError (and subclasses): with a hint naming what to do next.
    """
    spec_str = str(spec).strip()
    if not spec_str:
        raise UsageError("no model given", hint="pass --model (a checkpoint, folder or tag)")
    path = Path(spec_str).expanduser()
    if path.exists():
        if is_bundle_dir(path):
            return load_bundle(path, spec_str, device)
        if is_run_dir(path):
            return load_run_dir(path, spec_str, device, arch)
        if is_onnx_dir(path):
            raise InputError(
                f"{path}: an ONNX export, for runtimes without PyTorch",
                hint="load its .onnx files with onnxruntime (see the README); biotrove commands "
                "take the open_clip export (biotrove export --format open_clip)",
            )
        if path.is_dir():
            raise InputError(
                f"{path}: is neither an exported model folder nor a run folder",
                hint=f"a bundle holds {BUNDLE_CONFIG}; a run holds {CHECKPOINT_DIR}/",
            )
        if path.suffix == ".safetensors":
            return _load_safetensors(path, spec_str, device, arch)
        return load_checkpoint_file(path, spec_str, device, arch)
    if spec_str.startswith("hf-hub:"):
        return load_hf_hub(spec_str, device)
    if spec_str.startswith("local-dir:"):
        return load_model(spec_str[len("local-dir:") :], arch=arch, device=device)
    preset = registry.BIOTROVE_MODELS.get(spec_str.lower()) or registry.preset_for_filename(
        spec_str
    )
    if preset is not None:
        candidate = registry.models_dir() / preset.filename
        if candidate.is_file():
            return load_checkpoint_file(candidate, spec_str, device, arch)
        raise ModelLoadError(
            f"{preset.title} weights not found: {candidate} does not exist",
            hint=f"download {preset.filename} from {registry.HF_BIOTROVE} on a machine with "
            f"network and place it in {registry.models_dir()} (or set BIOTROVE_HOME)",
        )
    if ":" in spec_str and not spec_str.startswith((".", "/")):
        name, tag = spec_str.split(":", 1)
        return load_pretrained(name, tag, spec_str, device)
    if registry.arch_config(spec_str) is not None:
        raise UsageError(
            f"{spec_str!r} names an architecture, not weights",
            hint=f"use {spec_str}:TAG for pretrained weights (e.g. ViT-B-16:openai), "
            f"{spec_str}:random for random ones, or a checkpoint file",
        )
    looks_like_path = (
        any(c in spec_str for c in "/\\") or Path(spec_str).suffix in CHECKPOINT_SUFFIXES
    )
    raise InputError(
        f"{spec_str}: "
        + (
            "no such file or folder"
            if looks_like_path
            else "not a file, a folder, a BioTrove-CLIP model or an open_clip tag"
        ),
        hint="pass a checkpoint (.pt), an exported folder, a run folder, clip-o/clip-b/clip-m, "
        "hf-hub:org/repo or ARCH:TAG (e.g. ViT-B-16:openai)",
    )
