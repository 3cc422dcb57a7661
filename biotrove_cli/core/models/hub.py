"""Talking to the model hub: quiet open_clip logs, offline detection (the local cache only when
the hub cannot be reached), and the messages that say what to do when weights are unavailable."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """open_clip and huggingface_hub log on their own (download retries, "initialized
    randomly"); biotrove reports problems itself, so mute them meanwhile."""
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def network_available(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers at all: saves a minute of hub retries on an offline machine."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Run hub lookups from the local cache only when the hub cannot be reached."""
    if network_available():
        yield
        return
    import huggingface_hub.constants as hf_constants

    saved_env = os.environ.get("HF_HUB_OFFLINE")
    saved_const = hf_constants.HF_HUB_OFFLINE  # read at import time, so patch it too
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def why_unavailable() -> str:
    """Why hub weights could not be had, in a few words."""
    if network_available():
        return "the download failed (-v shows open_clip's error)"
    return "not in the local cache, and the model hub cannot be reached (offline)"


def offline_hint(what: str) -> str:
    """How to get ``what`` into the local cache of a machine without network."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"{what} must already be in the local cache when offline ({hub}/hub for Hugging Face "
        "files, ~/.cache/clip for open_clip URL downloads): fetch it once on a machine with "
        "network (e.g. `python -c \"import open_clip; open_clip.create_model('ARCH', "
        "pretrained='TAG')\"`) and copy the cache folder over"
    )
