"""Finding each sample's photo: a file under ``--images`` (by path, photo id or file stem), or,
with ``--download``, a fetch of its ``photo_url`` into that folder (:mod:`..download`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from biotrove_cli.core.data.images import ImageError, PhotoIndex
from biotrove_cli.core.data.shard.config import ShardConfig
from biotrove_cli.core.data.shard.plan import Sample
from biotrove_cli.core.runtime import ProgressFn

log = logging.getLogger("biotrove.shard")


# -- finding images ---------------------------------------------------------------------------
def resolve_sources(samples: list[Sample], images: Path) -> int:
    """Set ``sample.source`` for each sample whose image is under ``images``; returns found.

    A ``path`` is tried under ``images`` (a leading ``/`` is taken as the data root, as in the
    Life-Stages metadata), then as given; then the file is looked up by photo id, then by the
    path's file stem, in an index of the folder built once (:class:`images.PhotoIndex`: an
    exact stem wins; a match in case only must be the only one). A sample without a photo keeps
    why in ``sample.problem`` (``missing``, ``ambiguous``, ``unsupported``): the writer counts
    it under that reason.
    """
    index: PhotoIndex | None = None
    found = 0
    for s in samples:
        s.source = ""
        s.problem = None
        if s.path:
            for cand in (images / s.path.lstrip("/\\"), Path(s.path)):
                if cand.is_file():
                    s.source = str(cand)
                    break
        if not s.source:
            stems = [x for x in (s.photo_id, Path(s.path).stem if s.path else "") if x]
            if stems:
                if index is None:
                    index = PhotoIndex(images)
                try:
                    s.source = index.find(*stems)
                except ImageError as exc:
                    s.problem = (exc.reason, exc.detail)
        found += bool(s.source)
    return found


def _download_target(s: Sample, images: Path) -> Path:
    """Where a downloaded photo goes: its ``path`` under --images, else ``{key}{suffix}``."""
    from biotrove_cli.core.data.download import dest_name

    if s.path and not Path(s.path).is_absolute():
        return images / s.path
    return images / dest_name(s.url, s.key)


def to_download(samples: list[Sample]) -> list[Sample]:
    """The samples whose photo is not local but has a URL."""
    return [s for s in samples if not s.source and s.url]


def download_photos(
    wanted: list[Sample], cfg: ShardConfig, out: Path, progress: ProgressFn | None
) -> tuple[dict[str, Any], int]:
    """Fetch the photos of ``wanted`` (see :func:`to_download`) into ``--images``; set the
    source of each sample that now has a file.

    Returns the download summary and how many samples gained a local file.
    """
    from biotrove_cli import __version__
    from biotrove_cli.core.data.download import STATUS_FILE, DownloadJob, download_all

    images = Path(cfg.images)
    images.mkdir(parents=True, exist_ok=True)
    k, n = cfg.part
    # one status log per part: N machines never append to the same file
    status = STATUS_FILE if n == 1 else f"downloads.part-{k}-of-{n}.jsonl"
    summary = download_all(
        [DownloadJob(url=s.url, dest=_download_target(s, images)) for s in wanted],
        out / status,
        workers=cfg.download_workers,
        timeout=cfg.download_timeout,
        retries=cfg.download_retries,
        progress=progress,
        user_agent=f"biotrove/{__version__}",
    )
    log.info(
        f"download: {summary.downloaded} fetched, {summary.cached} already here, "
        f"{summary.failed} failed, {summary.skipped} skipped (failed for good earlier)"
    )
    gained = 0
    for s in wanted:
        target = _download_target(s, images)
        if target.is_file():
            s.source = str(target)
            s.problem = None
            gained += 1
    return summary.as_dict(), gained
