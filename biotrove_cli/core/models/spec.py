"""What a model spec names, decided before anything is loaded (open_clip's
``factory.parse_model_name`` is the model): a typed :class:`ModelSpec`.

Accepted specs, tried in this order:

1. an exported bundle folder (``open_clip_config.json`` + weights, from ``biotrove export``);
2. a biotrove run folder (its latest complete checkpoint, config and label bank);
3. a checkpoint file (``.pt``/``.pth``/``.bin``: open_clip training checkpoints with or without
   ``module.`` prefixes, optimizer state ignored; ``.safetensors`` beside a config or with
   ``arch=``);
4. a BioTrove-CLIP model by preset (``clip-o``, ``clip-b``, ``clip-m``) or published file name:
   its bundle in ``$BIOTROVE_HOME/models/<preset>``, downloaded and converted on first use
   (:mod:`published`);
5. ``hf-hub:org/repo`` and open_clip ``ARCH:TAG`` pretrained tags, from the local cache only
   when offline; ``ARCH:random`` builds random weights (benchmarks, smoke tests);
6. ``ARCH:/path/to/file.pt`` loads a file into a named architecture.

``local-dir:PATH`` (open_clip's own prefix) means PATH. Parsing looks at the file system and
biotrove's preset table only: no torch, no open_clip, nothing read from the files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.layout import is_bundle_dir, is_onnx_dir, is_run_dir
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.registry import ModelPreset

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: ``ARCH:TAG`` tags that mean "random weights".
RANDOM_TAGS = ("random", "none", "scratch")
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"


class SpecKind(str, Enum):
    """What a spec names."""

    BUNDLE = "bundle"  # a folder written by `biotrove export` (open_clip format)
    RUN = "run"  # a training run folder
    CHECKPOINT = "checkpoint"  # an existing file other than .safetensors
    SAFETENSORS = "safetensors"  # an existing .safetensors file
    PRESET = "preset"  # a BioTrove-CLIP preset or published file name
    HF_HUB = "hf-hub"  # hf-hub:org/repo
    PRETRAINED = "pretrained"  # ARCH:TAG
    RANDOM = "random"  # ARCH:random (or none, scratch)
    ARCH_FILE = "arch-file"  # ARCH:/path/to/file.pt
    ONNX = "onnx"  # an ONNX export: runs on onnxruntime, without PyTorch
    FOLDER = "folder"  # any other existing folder
    UNKNOWN = "unknown"  # none of the above (a missing file, a bare architecture, a typo)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec."""

    text: str  # the spec as given (stripped, without ``local-dir:``)
    kind: SpecKind
    path: Path | None = None  # the file or folder (PRESET: its bundle folder, maybe not yet made)
    arch: str = ""  # PRETRAINED, RANDOM, ARCH_FILE
    tag: str = ""  # PRETRAINED, RANDOM, ARCH_FILE (the file as written)
    preset: ModelPreset | None = None  # PRESET

    @property
    def file(self) -> Path:
        """The path of a kind that has one (a folder, a file, a preset's file)."""
        if self.path is None:
            raise ValueError(f"a {self.kind.value} spec names no file")
        return self.path

    @property
    def looks_like_path(self) -> bool:
        """Whether the text reads as a file name (for the message when nothing is there)."""
        return any(c in self.text for c in "/\\") or Path(self.text).suffix in CHECKPOINT_SUFFIXES


def parse_model_spec(spec: str | Path) -> ModelSpec:
    """What ``spec`` names (see the module docstring); nothing is loaded.

    Raises:
        UsageError: an empty spec.
    """
    text = str(spec).strip()
    if not text:
        raise UsageError("no model given", hint="pass --model (a checkpoint, folder or tag)")
    path = Path(text).expanduser()
    if path.exists():
        return ModelSpec(text, _path_kind(path), path=path)
    if text.startswith(HF_HUB_PREFIX):
        return ModelSpec(text, SpecKind.HF_HUB)
    if text.startswith(LOCAL_DIR_PREFIX):
        return parse_model_spec(text[len(LOCAL_DIR_PREFIX) :])
    preset = registry.BIOTROVE_MODELS.get(text.lower()) or registry.preset_for_filename(text)
    if preset is not None:
        where = registry.models_dir() / preset.name
        return ModelSpec(text, SpecKind.PRESET, path=where, preset=preset)
    if ":" in text and not text.startswith((".", "/")):
        arch, tag = text.split(":", 1)
        if tag.lower() in RANDOM_TAGS:
            return ModelSpec(text, SpecKind.RANDOM, arch=arch, tag=tag)
        if os.path.isfile(tag):
            return ModelSpec(text, SpecKind.ARCH_FILE, path=Path(tag), arch=arch, tag=tag)
        return ModelSpec(text, SpecKind.PRETRAINED, arch=arch, tag=tag)
    return ModelSpec(text, SpecKind.UNKNOWN)


def _path_kind(path: Path) -> SpecKind:
    if is_bundle_dir(path):
        return SpecKind.BUNDLE
    if is_run_dir(path):
        return SpecKind.RUN
    if is_onnx_dir(path):
        return SpecKind.ONNX
    if path.is_dir():
        return SpecKind.FOLDER
    return SpecKind.SAFETENSORS if path.suffix == ".safetensors" else SpecKind.CHECKPOINT


def backend_of(spec: str | Path | None) -> str:
    """``onnx`` when ``spec`` names an ONNX bundle (onnxruntime, no torch), else ``torch``."""
    if spec is None:
        return "torch"
    return "onnx" if parse_model_spec(spec).kind is SpecKind.ONNX else "torch"
