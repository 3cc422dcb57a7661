"""Fetching the published BioTrove-CLIP checkpoints from the Hugging Face Hub repository
``BGLab/BioTrove-CLIP`` into the hub's own cache (where every hub tool finds them).

* ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_TOKEN`` are read when
  a file is fetched, not when huggingface_hub was imported, so they hold for in-process callers
  (notebooks, tests) too.
* A checkpoint placed by hand in ``$BIOTROVE_HOME/models`` wins; offline, or when the hub cannot
  be reached, the hub cache is used; otherwise the error names the file, where it comes from and
  where to place it by hand.
* Downloads resume. huggingface_hub's ``http_get`` retries a broken connection with a ``Range``
  request; the bytes of an interrupted run stay in ``blobs/<etag>.incomplete`` (huggingface_hub
  deletes its own partial files since 1.0), and the next run continues from them.
* The finished file is checked against the hub's size and, for LFS files (whose ETag is the
  file's sha256), its content; a mismatch deletes it and fetches it again, once.
* ``hf_hub_download`` then links the blob into the cache's snapshot (refs, pointer file).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from biotrove_cli.core.errors import CheckpointCorruptError, ModelLoadError
from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.registry import ModelPreset
from biotrove_cli.core.runtime import terminal_progress_wanted

log = logging.getLogger("biotrove")

HUB_REPO = "BGLab/BioTrove-CLIP"
REVISION = "main"
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# -- the hub's settings, read now -------------------------------------------------------------
def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set."""
    return _true(os.environ.get("HF_HUB_OFFLINE")) or _true(os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_cache() -> Path:
    """The hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the user's cache folder."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(home).expanduser() / "hub"


def hub_url(filename: str) -> str:
    """Where the hub serves ``filename`` of the BioTrove-CLIP repository."""
    return f"{hub_endpoint()}/{HUB_REPO}/resolve/{REVISION}/{filename}"


@contextlib.contextmanager
def _hub_settings() -> Iterator[None]:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: make it agree with the environment
    for the duration of a call."""
    import huggingface_hub.constants as hf_constants

    saved = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = hub_offline()
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved


# -- where a checkpoint is without the network -------------------------------------------------
def hand_placed(preset: ModelPreset) -> Path:
    """Where a checkpoint copied by hand is looked for: ``$BIOTROVE_HOME/models/FILENAME``."""
    return registry.models_dir() / preset.filename


def local_checkpoint(preset: ModelPreset) -> Path | None:
    """The preset's checkpoint if this machine has it (placed by hand, or in the hub cache)."""
    if hand_placed(preset).is_file():
        return hand_placed(preset)
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        HUB_REPO, preset.filename, cache_dir=str(hub_cache()), revision=REVISION
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def unavailable(preset: ModelPreset, why: str) -> ModelLoadError:
    """The error of a checkpoint that can be neither found nor downloaded: what file, from
    where, and where to put it by hand."""
    return ModelLoadError(
        f"{preset.title} is not on this machine and cannot be downloaded ({why}): it needs "
        f"{preset.filename} from {hub_url(preset.filename)}",
        hint=f"on a machine with network run `biotrove models pull {preset.name}` and copy "
        f"{registry.models_dir() / preset.name} here, or download the file by hand and place it "
        f"in {registry.models_dir()} (set BIOTROVE_HOME to move that folder)",
    )


# -- fetching ------------------------------------------------------------------------------------
def fetch_checkpoint(preset: ModelPreset, *, refetch: bool = False) -> Path:
    """The preset's checkpoint file: placed by hand, cached, or downloaded now.

    Args:
        refetch: the cached copy proved corrupt: drop it and download it again.

    Raises:
        ModelLoadError: offline or the hub failed, and no copy is on this machine.
        CheckpointCorruptError: the downloaded file does not match the hub's size or hash
            twice in a row.
    """
    if hand_placed(preset).is_file() and not refetch:
        return hand_placed(preset)
    if hub_offline():
        found = local_checkpoint(preset)
        if found is not None and not refetch:
            return found
        raise unavailable(preset, "offline: HF_HUB_OFFLINE is set")
    with _hub_settings():
        try:
            meta = _metadata(preset)
        except _Unreachable as exc:  # a cached copy will do
            found = local_checkpoint(preset)
            if found is not None and not refetch:
                log.info(f"{exc.why}; using the cached {found}")
                return found
            raise unavailable(preset, exc.why) from None
        blob = _blob_path(meta)
        if refetch or (blob.is_file() and not _matches(blob, meta, full=False)):
            _drop(blob, preset)
        if not blob.is_file():
            _download_blob(preset, meta, blob)
        return _link(preset, blob)


class _Unreachable(Exception):
    """The hub gave no usable answer (no network, a server error)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def _metadata(preset: ModelPreset) -> Any:
    """The hub's answer for the file (commit, ETag, size, where to download it).

    Raises:
        _Unreachable: no answer, or a server error (the cache may still help).
        ModelLoadError: the hub refuses the file, has no such file, or is not a hub.
    """
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    url = hub_url(preset.filename)
    try:
        meta = get_hf_file_metadata(url)
    except (GatedRepoError, RepositoryNotFoundError) as exc:
        raise ModelLoadError(
            f"{url}: the hub refuses the file ({_first_line(exc)})",
            hint="if the repository needs a login, set HF_TOKEN (or run `hf auth login`)",
        ) from None
    except EntryNotFoundError:
        raise ModelLoadError(
            f"{url}: the hub has no such file (HTTP 404)",
            hint=f"check HF_ENDPOINT; the published files are listed at {registry.HF_BIOTROVE}",
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise _Unreachable(f"{hub_endpoint()} answered HTTP {status}") from None
    except (OfflineModeIsEnabled, OSError) as exc:
        raise _Unreachable(f"{hub_endpoint()} cannot be reached ({_first_line(exc)})") from None
    except Exception as exc:  # huggingface_hub's transport (httpx) errors: connect, timeout
        if not type(exc).__module__.startswith("httpx"):
            raise
        raise _Unreachable(f"{hub_endpoint()} cannot be reached ({_first_line(exc)})") from None
    if not meta.etag or not meta.commit_hash:
        raise ModelLoadError(
            f"{url} does not answer like the Hugging Face Hub (no ETag or X-Repo-Commit)",
            hint="check HF_ENDPOINT, or your proxy and firewall settings",
        )
    return meta


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _storage() -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache() / repo_folder_name(repo_id=HUB_REPO, repo_type="model")


def _blob_path(meta: Any) -> Path:
    return _storage() / "blobs" / meta.etag


def _download_blob(preset: ModelPreset, meta: Any, blob: Path) -> None:
    """Download the file into ``blob``, resuming an earlier run's ``.incomplete`` bytes, and
    check it; a copy that does not match is fetched again once."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + ".incomplete")
    lock = _storage().parent / ".locks" / _storage().name / f"{meta.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    size = f" ({human_size(meta.size)})" if meta.size else ""
    for attempt in (1, 2):
        with WeakFileLock(str(lock)):
            if blob.is_file():  # another process finished it meanwhile
                return
            have = partial.stat().st_size if partial.is_file() else 0
            if meta.size is not None and have > meta.size:
                partial.unlink()
                have = 0
            if have:
                log.info(f"resuming the download of {preset.filename} at {human_size(have)}")
            else:
                url = hub_url(preset.filename)
                log.info(f"downloading {preset.title}: {preset.filename}{size} from {url}")
            headers = build_hf_headers()
            headers["Accept-Encoding"] = "identity"
            if urlparse(meta.location).netloc != urlparse(hub_endpoint()).netloc:
                headers.pop("authorization", None)  # a signed CDN address: no token there
            with _progress_bars(), open(partial, "ab") as fh:
                http_get(
                    meta.location,
                    fh,
                    resume_size=have,
                    headers=headers,
                    expected_size=meta.size,
                    displayed_filename=preset.filename,
                )
            if _matches(partial, meta, full=True):
                os.replace(partial, blob)
                return
            partial.unlink(missing_ok=True)
        if attempt == 1:
            log.warning(
                f"{preset.filename}: the download does not match the hub's size or hash; "
                "fetching it again"
            )
    raise CheckpointCorruptError(
        f"{preset.filename}: downloaded twice, and neither copy matches the hub's size and hash",
        hint=f"check the network (a proxy that alters files?) and {hub_url(preset.filename)}",
    )


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """huggingface_hub's progress bar, on a terminal only, and never with --quiet."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    wanted = terminal_progress_wanted()
    was_disabled = are_progress_bars_disabled()
    if wanted or was_disabled:
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _matches(path: Path, meta: Any, *, full: bool) -> bool:
    """Whether ``path`` has the hub's size and, with ``full``, its sha256 (an LFS ETag)."""
    if meta.size is not None and path.stat().st_size != meta.size:
        return False
    if full and _SHA256.match(meta.etag):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest() == meta.etag
    return True


def _drop(blob: Path, preset: ModelPreset) -> None:
    """Delete a bad copy (the blob and the snapshot's pointer to it)."""
    log.warning(f"{preset.filename}: the cached copy is damaged; fetching it again")
    blob.unlink(missing_ok=True)
    for pointer in (_storage() / "snapshots").glob(f"*/{preset.filename}"):
        pointer.unlink(missing_ok=True)


def _link(preset: ModelPreset, blob: Path) -> Path:
    """Let huggingface_hub put the downloaded blob into its snapshot (refs + pointer file); the
    blob itself when that fails (its content is checked already)."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            HUB_REPO,
            preset.filename,
            revision=REVISION,
            cache_dir=str(hub_cache()),
            endpoint=hub_endpoint(),
        )
    except Exception as exc:  # the network went away between two requests
        log.debug("hf_hub_download could not link %s: %s", blob, exc)
        return blob
    return Path(path)
