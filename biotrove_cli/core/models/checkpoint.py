"""Checkpoint I/O that cannot corrupt and loads nothing but data.

* Loading is weights-only. The published BioTrove-CLIP files carry numpy scalars and dtypes in
  their pickle; exactly those types are allowed (torch.serialization safe globals). A pickle
  that would import or call anything else is refused with :class:`UnsafeCheckpointError`.
* Saving goes through a temp file, fsync and an atomic rename; a run's ``latest`` pointer is
  updated only after the checkpoint is complete. Resolving "latest" takes the newest complete
  step checkpoint (the pointer is a hint) and skips truncated or unreadable files with a
  warning.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import (
    CheckpointCorruptError,
    InputError,
    ModelLoadError,
    UnsafeCheckpointError,
)
from biotrove_cli.core.layout import CHECKPOINT_DIR, LATEST, checkpoint_step

# named here too: the trainer and the tests write checkpoints through this module
from biotrove_cli.core.layout import checkpoint_name as checkpoint_name

log = logging.getLogger("biotrove")


def _numpy_safe_globals() -> list:
    """numpy scalar reconstruction and dtypes, under both numpy 1.x and 2.x module paths."""
    import _codecs

    import numpy as np

    try:
        scalar = np._core.multiarray.scalar  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        scalar = np.core.multiarray.scalar
    allowed: list = [
        _codecs.encode,  # numpy scalars pickled with protocol 2 store their bytes through it
        np.dtype,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and name.endswith("DType"):
                allowed.append(obj)
    return allowed


def plain_reason(exc: BaseException) -> str:
    """The first line of a library's error, for a message; never torch's advice to retry with
    ``weights_only=False`` (which would run the file's code)."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    if "weights_only" in text or "weights only" in text.lower():
        return "its pickle is not plain weights, so a weights-only load refuses it"
    return text


_UNSAFE_HINT = (
    "biotrove loads checkpoints weights-only and never runs code from them; if you "
    "trust this file, convert it to a plain state dict or safetensors in a sandbox"
)


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` with weights_only=True plus numpy scalars/dtypes; clear errors otherwise.

    Raises:
        InputError: no such file / a folder.
        UnsafeCheckpointError: the pickle references code (e.g. ``os.system``).
        CheckpointCorruptError: truncated, empty or not a checkpoint at all.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointCorruptError(
            f"{path}: the file is empty (0 bytes)",
            hint="the copy or download was interrupted; fetch it again",
        )
    if not _starts_like_zip(path) and not _starts_like_pickle(path):
        raise CheckpointCorruptError(
            f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)",
            hint="pass a .pt training checkpoint, an exported folder, or an open_clip tag",
        )
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            # torch warns about pickle protocols it may not support; the outcome is reported
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = re.search(r"(?:Unsupported global|GLOBAL)[:\s]+(?:GLOBAL\s+)?([\w.]+)", text)
        if m:
            raise UnsafeCheckpointError(
                f"{path}: refused: its pickle asks to load {m.group(1)}, which is code, not "
                "weights",
                hint=_UNSAFE_HINT,
            ) from exc
        if "weights only" in text.lower() or "unsupported" in text.lower():
            detail = re.search(r"(Unsupported [^\n]*)", text)
            raise UnsafeCheckpointError(
                f"{path}: refused: its pickle uses constructs that weights-only loading does not "
                f"allow ({detail.group(1).strip() if detail else 'not plain data'})",
                hint=_UNSAFE_HINT,
            ) from exc
        raise CheckpointCorruptError(
            f"{path}: not a readable checkpoint ({plain_reason(exc)})",
            hint="the file may be truncated or not a PyTorch file",
        ) from exc
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointCorruptError(
            f"{path}: truncated or corrupt ({size} bytes)", hint="copy or download the file again"
        ) from exc
    except RuntimeError as exc:
        text = str(exc)
        if "zip" in text.lower() or "archive" in text.lower() or "storage" in text.lower():
            raise CheckpointCorruptError(
                f"{path}: truncated or corrupt ({size} bytes)",
                hint="copy or download the file again",
            ) from exc
        raise ModelLoadError(f"{path}: cannot load it ({plain_reason(exc)})") from exc
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        if _starts_like_zip(path):
            raise CheckpointCorruptError(
                f"{path}: truncated or corrupt ({size} bytes)",
                hint="copy or download the file again",
            ) from exc
        raise CheckpointCorruptError(
            f"{path}: not a PyTorch checkpoint ({plain_reason(exc)})",
            hint="pass a .pt training checkpoint, an exported folder, or an open_clip tag",
        ) from exc


def _starts_like_pickle(path: Path) -> bool:
    """Legacy torch files and raw pickles start with the PROTO opcode (0x80)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(1) == b"\x80"
    except OSError:
        return False


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


PREFIXES = ("module.", "_orig_mod.")


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Any]:
    """The model weights of a loaded checkpoint, without DDP/compile prefixes.

    Accepts open_clip training checkpoints (``{"state_dict": ..., "optimizer": ...}``), biotrove
    checkpoints, and bare state dicts.
    """
    import torch

    sd = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                sd = obj[key]
                break
    if not isinstance(sd, dict) or not sd:
        raise ModelLoadError(
            f"{source}: holds no model weights",
            hint="expected a dict of tensors or a 'state_dict' entry",
        )
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{source}: holds no tensors", hint="is this a model checkpoint?")
    out = {}
    for key, value in tensors.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    if all(k.startswith("model.") for k in out):  # wrapped by a training framework
        out = {k[len("model.") :]: v for k, v in out.items()}
    return out


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temp file, fsync, rename)."""
    import torch

    from biotrove_cli.core.io import atomic_open

    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def write_latest(run_dir: str | Path, checkpoint: str | Path) -> None:
    """Point ``checkpoints/latest`` at a complete checkpoint (atomic)."""
    from biotrove_cli.core.io import atomic_write_text

    ckdir = Path(run_dir) / CHECKPOINT_DIR
    atomic_write_text(ckdir / LATEST, Path(checkpoint).name + "\n")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The step checkpoints of a run, newest (highest step) first."""
    ckdir = Path(run_dir) / CHECKPOINT_DIR
    if not ckdir.is_dir():
        return []
    found = []
    for p in ckdir.iterdir():
        step = checkpoint_step(p.name)
        if step is not None and p.is_file():
            found.append((step, p))
    return [p for _, p in sorted(found, reverse=True)]


def looks_complete(path: Path) -> bool:
    """Cheap integrity check: non-empty zip whose central directory reads and names data.pkl."""
    try:
        if path.stat().st_size == 0:
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            return any(n.endswith("data.pkl") for n in names)
    except (OSError, zipfile.BadZipFile):
        return False


def resolve_latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    Every step checkpoint is tried newest (highest step) first; truncated or unreadable files
    are skipped with a warning. The ``latest`` pointer is only a hint, tried last: a job killed
    between writing a checkpoint and moving the pointer leaves it one checkpoint behind, and
    the newer complete file must still win.
    """
    run_dir = Path(run_dir)
    ckdir = run_dir / CHECKPOINT_DIR
    candidates = list_checkpoints(run_dir)
    pointer = ckdir / LATEST
    if pointer.is_file():
        try:
            name = pointer.read_text().strip()
        except OSError:
            name = ""
        if name and ckdir / name not in candidates:
            candidates.append(ckdir / name)
    for path in candidates:
        if not path.exists():
            continue
        if looks_complete(path):
            return path
        log.warning("skipping %s: truncated or unreadable checkpoint", path)
    return None


def prune_checkpoints(
    run_dir: str | Path, keep_last: int, protect: tuple[Path, ...] = ()
) -> list[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints (never a protected one)."""
    if keep_last <= 0:
        return []
    removed = []
    for path in list_checkpoints(run_dir)[keep_last:]:
        if path in protect:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
