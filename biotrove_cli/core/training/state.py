"""Checkpoint state of a training run: what a checkpoint carries, and finding one to resume.

A checkpoint carries model, optimizer, scaler, step, epoch, batch position, RNG states, the data
layout (workers, world size, batch size) and the resolved config; it is written atomically, then
``latest`` points at it, and only the newest ``keep_last`` are kept. ``resume="auto"`` (the CLI's
default) continues a run folder's newest complete checkpoint or starts afresh in an empty one;
``resume="latest"`` insists on a checkpoint; both skip truncated files. Changing the schedule on
resume is refused unless ``allow_config_change``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import InputError, TrainingError
from biotrove_cli.core.layout import CHECKPOINT_DIR, checkpoint_name
from biotrove_cli.core.training.config import SCHEDULE_KEYS

log = logging.getLogger("biotrove")


def rng_state() -> dict[str, Any]:
    """Every RNG a resumed run must continue: torch (and CUDA), Python, numpy."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    try:
        torch.set_rng_state(state["torch"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        keys = state["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        log.warning("could not restore RNG states (%s); continuing with fresh ones", exc)


def save_training_checkpoint(
    run_dir: Path,
    *,
    model: Any,
    optimizer: Any,
    scaler: Any,
    cfg_dict: dict,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    data_info: dict,
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-N.pt`` of the (unwrapped) model, point ``latest`` at it, prune."""
    from biotrove_cli.core.models.checkpoint import (
        prune_checkpoints,
        save_checkpoint,
        write_latest,
    )

    path = run_dir / CHECKPOINT_DIR / checkpoint_name(step)
    payload = {
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "name": cfg_dict.get("model", {}).get("arch"),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "data": data_info,
        "config": cfg_dict,
        "biotrove_version": __version__,
    }
    save_checkpoint(path, payload)
    write_latest(run_dir, path)
    prune_checkpoints(run_dir, keep_last, protect=(path,))
    return path


def schedule_changes(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for each schedule key (SCHEDULE_KEYS) that differs."""
    old_flat, new_flat = configlib.flatten(old), configlib.flatten(new)
    return [
        f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}"
        for k in SCHEDULE_KEYS
        if old_flat.get(k) != new_flat.get(k)
    ]


def load_training_state(path: Path, cfg_dict: dict, allow_config_change: bool) -> dict[str, Any]:
    """A checkpoint's state, refused when resuming it would silently change the schedule."""
    from biotrove_cli.core.models.checkpoint import safe_load

    state = safe_load(path)
    changes = schedule_changes(state.get("config") or {}, cfg_dict)
    if changes and not allow_config_change:
        raise TrainingError(
            "resuming with a different schedule would silently change the run: "
            + "; ".join(changes),
            hint="resume with the original settings, pass --allow-config-change, or choose "
            "a new --run-dir for a new run",
        )
    return state


def warn_on_layout_change(state: dict[str, Any], workers: int, world_size: int) -> None:
    """Warn when a run resumes with other data workers or processes than it saved with."""
    saved = state.get("data") or {}
    if saved.get("workers") not in (None, workers) or saved.get("world_size") not in (
        None,
        world_size,
    ):
        log.warning(
            "resuming with a different number of data workers or processes: the "
            "data order of the current epoch changes (no sample is lost or seen "
            "twice within an epoch only when they match)"
        )


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint ``resume`` names, or None for a fresh start.

    ``auto`` (the CLI's default, and torchrun restarts): the newest complete checkpoint when
    the run folder holds one, a fresh start when it holds none, an error when it holds only
    unreadable ones (a fresh start would write over them). ``latest``: the newest complete
    checkpoint, which must exist. Anything else is a checkpoint file.
    """
    from biotrove_cli.core.models.checkpoint import list_checkpoints, resolve_latest

    if not resume:
        return None
    if resume == "latest":
        path = resolve_latest(run_dir)
        if path is None:
            raise TrainingError(
                f"--resume latest: {run_dir} has no complete checkpoint",
                hint="start the run with --resume auto (the default)",
            )
        return path
    if resume == "auto":
        path = resolve_latest(run_dir)
        if path is None and list_checkpoints(run_dir):
            raise TrainingError(
                f"{run_dir} holds checkpoints, but none of them is complete",
                hint="continue from one with --resume PATH, or choose a new --run-dir",
            )
        return path
    path = Path(resume)
    if not path.is_file():
        raise InputError(
            f"--resume {resume}: no such checkpoint file",
            hint="use --resume latest, or a path to a step-*.pt file",
        )
    return path


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh start must not write over a run that has checkpoints."""
    from biotrove_cli.core.models.checkpoint import list_checkpoints

    if list_checkpoints(run_dir):
        raise TrainingError(
            f"{run_dir} already holds a run with checkpoints",
            hint="continue it with --resume auto (the CLI's default), or choose a new --run-dir",
        )
