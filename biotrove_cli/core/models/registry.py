"""The model registry: open_clip architectures, the shipped tiny one, and BioTrove-CLIP presets.

Nothing here imports torch or open_clip at module import time.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TINY_ARCH = "biotrove-tiny"
CONFIG_DIR = Path(__file__).with_name("configs")
HF_BIOTROVE = "https://huggingface.co/BGLab/BioTrove-CLIP"


@dataclass(frozen=True)
class ModelPreset:
    """One of the published BioTrove-CLIP models."""

    name: str
    title: str
    arch: str  # open_clip architecture name, QuickGELU variant where the weights need it
    quick_gelu: bool
    init: str  # the weights BioTrove fine-tuned from, as a load_model spec
    filename: str  # the published checkpoint's file name
    epochs: int
    description: str


BIOTROVE_MODELS: dict[str, ModelPreset] = {
    "clip-o": ModelPreset(
        name="clip-o",
        title="BioTrove-CLIP-O",
        arch="ViT-B-16-quickgelu",
        quick_gelu=True,
        init="ViT-B-16-quickgelu:openai",
        filename="biotroveclip-vit-b-16-from-openai-epoch-40.pt",
        epochs=40,
        description="ViT-B/16 initialised from OpenAI CLIP (QuickGELU), 40 epochs",
    ),
    "clip-b": ModelPreset(
        name="clip-b",
        title="BioTrove-CLIP-B",
        arch="ViT-B-16",
        quick_gelu=False,
        init="hf-hub:imageomics/bioclip",
        filename="biotroveclip-vit-b-16-from-bioclip-epoch-8.pt",
        epochs=8,
        description="ViT-B/16 initialised from BioCLIP, 8 epochs",
    ),
    "clip-m": ModelPreset(
        name="clip-m",
        title="BioTrove-CLIP-M",
        arch="ViT-L-14-quickgelu",
        quick_gelu=True,
        init="ViT-L-14-quickgelu:metaclip_fullcc",
        filename="biotroveclip-vit-l-14-from-metaclip-epoch-12.pt",
        epochs=12,
        description="ViT-L/14 initialised from MetaCLIP (QuickGELU), 12 epochs",
    ),
}


def preset_for_filename(name: str) -> ModelPreset | None:
    """The BioTrove-CLIP preset whose published file name is ``name`` (any folder), if any."""
    base = os.path.basename(name).lower()
    for preset in BIOTROVE_MODELS.values():
        if preset.filename.lower() == base:
            return preset
    return None


def biotrove_home() -> Path:
    """Where biotrove keeps models and caches: ``$BIOTROVE_HOME`` or ``~/.cache/biotrove``."""
    env = os.environ.get("BIOTROVE_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "biotrove"


def models_dir() -> Path:
    """The published BioTrove-CLIP models' folder: a bundle per preset (``clip-o/``...), and
    ``.pt`` files placed there by hand."""
    return biotrove_home() / "models"


def cache_dir() -> Path:
    return biotrove_home() / "cache"


_registered = False


def ensure_registered() -> None:
    """Make open_clip know the shipped tiny architecture (idempotent)."""
    global _registered
    if _registered:
        return
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    _registered = True


@lru_cache(maxsize=1)
def tiny_config() -> dict:
    return json.loads((CONFIG_DIR / f"{TINY_ARCH}.json").read_text())


def arch_config(name: str) -> dict | None:
    """The open_clip model config of an architecture name (a copy), or None."""
    if name == TINY_ARCH:
        return copy.deepcopy(tiny_config())
    ensure_registered()
    from open_clip.factory import get_model_config

    cfg = get_model_config(name)
    return copy.deepcopy(cfg) if cfg is not None else None
