"""The published BioTrove-CLIP models (``clip-o``, ``clip-b``, ``clip-m``) on this machine.

On first use a preset's checkpoint is fetched (:mod:`download`), loaded weights-only, and
converted once into a bundle under ``$BIOTROVE_HOME/models/<preset>/`` by the export job:
``open_clip_model.safetensors`` + ``open_clip_config.json`` (no pickle, no optimizer state), the
``inat2021`` label bank and its class text embeddings, verified by reloading it with stock
open_clip. Every later run loads that bundle and never touches the network or the pickle.
A lock file makes concurrent first runs convert once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import CheckpointCorruptError, UsageError
from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.layout import is_bundle_dir
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.download import (
    fetch_checkpoint,
    hand_placed,
    hub_url,
    local_checkpoint,
)
from biotrove_cli.core.models.loaded import LoadedModel
from biotrove_cli.core.models.registry import ModelPreset
from biotrove_cli.core.runtime import ProgressFn, terminal_progress_wanted, tqdm_progress
from biotrove_cli.core.taxonomy.banks import BANKS, DEFAULT_BANK

log = logging.getLogger("biotrove")


def bundle_dir(preset: ModelPreset) -> Path:
    """Where the preset's converted bundle lives: ``$BIOTROVE_HOME/models/<preset>``."""
    return registry.models_dir() / preset.name


def preset_named(name: str) -> ModelPreset:
    """The preset called ``name`` (or by its published file name).

    Raises:
        UsageError: no such preset.
    """
    preset = registry.BIOTROVE_MODELS.get(name.strip().lower()) or registry.preset_for_filename(
        name
    )
    if preset is None:
        raise UsageError(
            f"{name!r} is not a BioTrove-CLIP model",
            hint=f"the published models are {', '.join(registry.BIOTROVE_MODELS)}",
        )
    return preset


def load_preset(
    preset: ModelPreset, spec: str, device: str, arch: str | None = None
) -> LoadedModel:
    """A published model from its bundle, fetched and converted first if need be."""
    from biotrove_cli.core.models.loaders import load_bundle

    loaded = load_bundle(ensure_bundle(preset, device=device, arch=arch), spec, device)
    loaded.kind = "preset"
    return loaded


def ensure_bundle(
    preset: ModelPreset,
    *,
    device: str = "cpu",
    arch: str | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """The preset's bundle folder, made now from its checkpoint if it does not exist yet.

    Args:
        device: where the label bank's class texts are encoded during the conversion.
        arch: the architecture to load the checkpoint into (default: the preset's).
        progress: ``(done, total)`` while class texts are encoded (default: a bar on a terminal).

    Raises:
        ModelLoadError: the checkpoint can be neither found nor downloaded, or does not load.
        VerificationError: the converted bundle does not reproduce the checkpoint.
    """
    out = bundle_dir(preset)
    if is_bundle_dir(out):
        return out
    from huggingface_hub.utils import WeakFileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(out.parent / f".{preset.name}.lock")):
        if is_bundle_dir(out):  # another process converted it meanwhile
            return out
        ckpt, source = _load_checkpoint(preset, device, arch)
        bar_wanted = progress is None and terminal_progress_wanted()
        with tqdm_progress("encoding class texts", "prompt", enabled=bar_wanted) as bar:
            _convert(preset, ckpt, source, out, device, progress or bar)
    return out


def _load_checkpoint(preset: ModelPreset, device: str, arch: str | None) -> tuple[Path, Any]:
    """The checkpoint, fetched and loaded weights-only; a damaged download is fetched again."""
    ckpt = fetch_checkpoint(preset)
    try:
        return ckpt, _load(preset, ckpt, arch)
    except CheckpointCorruptError:
        if ckpt == hand_placed(preset):
            raise
        log.warning(f"{ckpt}: the downloaded checkpoint does not load; fetching it again")
        ckpt = fetch_checkpoint(preset, refetch=True)
        return ckpt, _load(preset, ckpt, arch)


def _load(preset: ModelPreset, ckpt: Path, arch: str | None) -> Any:
    from biotrove_cli.core.models.loaders import load_checkpoint_file

    why = (
        f"architecture {arch} from --arch"
        if arch
        else f"{preset.title}: documented as {preset.arch}"
        + (" (QuickGELU, OpenAI/MetaCLIP-initialised)" if preset.quick_gelu else "")
    )
    log.info(f"loading {ckpt} (weights only)")
    return load_checkpoint_file(ckpt, preset.name, "cpu", arch or preset.arch, reason=why)


def _convert(
    preset: ModelPreset,
    ckpt: Path,
    source: Any,
    out: Path,
    device: str,
    progress: ProgressFn | None,
) -> None:
    """Export the loaded checkpoint with the default label bank into ``out`` (verified)."""
    from biotrove_cli.core.models.export import ExportConfig
    from biotrove_cli.core.models.export.job import check_export, export_loaded

    bank = BANKS[DEFAULT_BANK]
    log.info(
        f"converting {preset.title} once into a safe bundle in {out} (safetensors, the "
        f"{bank.name} label bank with its class embeddings); later runs load it directly"
    )
    job = check_export(ExportConfig(source=str(ckpt), out=out, labels=bank.path, device=device))
    job.bank.source = bank.name
    export_loaded(job, source, progress)


# -- what is on this machine (`biotrove models`) ------------------------------------------------
def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def preset_record(preset: ModelPreset) -> dict[str, Any]:
    """What ``biotrove models`` shows of one preset: state, where its files are, how big."""
    out = bundle_dir(preset)
    ready = is_bundle_dir(out)
    ckpt = local_checkpoint(preset)
    bundle_bytes = _folder_bytes(out) if ready else None
    ckpt_bytes = ckpt.stat().st_size if ckpt is not None else None
    if ready:
        state = "ready"
    elif ckpt is not None:
        state = "downloaded"  # converted at the next use
    else:
        state = "not downloaded"
    return {
        "preset": preset.name,
        "title": preset.title,
        "state": state,
        "arch": preset.arch,
        "bundle": str(out) if ready else None,
        "bundle_size": human_size(bundle_bytes) if bundle_bytes is not None else None,
        "bundle_bytes": bundle_bytes,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "checkpoint_size": human_size(ckpt_bytes) if ckpt_bytes is not None else None,
        "checkpoint_bytes": ckpt_bytes,
        "url": hub_url(preset.filename),
        "description": preset.description,
    }


def list_presets() -> list[dict[str, Any]]:
    """One record per published model (no network)."""
    return [preset_record(p) for p in registry.BIOTROVE_MODELS.values()]


def pull(names: list[str], device: str = "cpu") -> list[dict[str, Any]]:
    """Download and convert the named presets now (for machines without network later).

    Raises:
        UsageError: a name that is not a preset (checked before anything is fetched).
    """
    presets = [preset_named(n) for n in names]
    for preset in presets:
        ensure_bundle(preset, device=device)
    return [preset_record(p) for p in presets]
