"""Fetch photos that are not on disk yet (``biotrove shard --download``).

Each URL is fetched at most once per successful download: a file already at its destination is
never fetched again, and a URL whose server answered with a permanent error (404, 410, 403...)
is not asked again on a rerun. Transient problems (timeouts, connection resets, truncated bodies,
5xx, 429) are retried with exponential backoff.

Every outcome is appended as one JSON line to a status file (``downloads.jsonl`` in the output
folder): ``{"url", "path", "status", "http_status", "error", "attempts", "bytes", "time"}``.
An append-only log survives any interruption; a torn last line (power loss) is skipped when read.
Files themselves are written atomically, so a killed download never leaves half a photo.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from biotrove_cli.core.data.images import WEB_IMAGE_SUFFIXES
from biotrove_cli.core.io import atomic_write_bytes
from biotrove_cli.core.runtime import ProgressFn

STATUS_FILE = "downloads.jsonl"
# answers that will not change if asked again (client errors other than timeout/rate limit)
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class DownloadJob:
    """One photo to fetch: from ``url`` into ``dest``."""

    url: str
    dest: Path


@dataclass
class DownloadSummary:
    """What a download pass did."""

    requested: int = 0
    downloaded: int = 0
    cached: int = 0  # already on disk: not fetched
    skipped: int = 0  # a permanent failure recorded by an earlier run: not asked again
    failed: int = 0
    retries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)  # short error kind -> n

    def as_dict(self) -> dict:
        return {
            "requested": self.requested,
            "downloaded": self.downloaded,
            "cached": self.cached,
            "skipped": self.skipped,
            "failed": self.failed,
            "retries": self.retries,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "errors": dict(sorted(self.errors.items())),
        }


def dest_name(url: str, stem: str) -> str:
    """``{stem}{suffix}`` with the URL's image suffix (``.jpg`` when it has none we know)."""
    suffix = Path(urlsplit(url).path).suffix.lower()
    if suffix not in WEB_IMAGE_SUFFIXES:
        suffix = ".jpg"
    return f"{stem}{suffix}"


def read_status(path: Path) -> dict[str, dict]:
    """The last recorded outcome per URL (torn or foreign lines are ignored)."""
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("url"), str):
                out[rec["url"]] = rec
    return out


class _Transient(Exception):
    """A failure worth another try."""

    def __init__(self, kind: str, detail: str, http_status: int | None = None):
        super().__init__(detail)
        self.kind = kind
        self.http_status = http_status


class _Permanent(Exception):
    def __init__(self, kind: str, detail: str, http_status: int | None = None):
        super().__init__(detail)
        self.kind = kind
        self.http_status = http_status


def _fetch_once(url: str, timeout: float, user_agent: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            data = resp.read()
            expected = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as exc:
        kind = f"http_{exc.code}"
        if exc.code in RETRYABLE_HTTP:
            raise _Transient(kind, f"HTTP {exc.code} {exc.reason}", exc.code) from exc
        raise _Permanent(kind, f"HTTP {exc.code} {exc.reason}", exc.code) from exc
    except http.client.IncompleteRead as exc:
        raise _Transient("truncated", f"body cut short ({len(exc.partial)} bytes)") from exc
    except TimeoutError as exc:
        raise _Transient("timeout", f"no answer within {timeout:g}s") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise _Transient("timeout", f"no answer within {timeout:g}s") from exc
        raise _Transient("connection", str(reason)) from exc
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        raise _Transient("connection", f"{type(exc).__name__}: {exc}") from exc
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise _Transient("truncated", f"got {len(data)} of {expected} bytes")
    if not data:
        raise _Transient("empty", "empty body")
    return data


def download_all(
    jobs: Iterable[DownloadJob],
    status_path: str | Path,
    workers: int = 8,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 0.5,
    progress: ProgressFn | None = None,
    user_agent: str = "biotrove",
) -> DownloadSummary:
    """Fetch every job whose destination does not exist yet; record each outcome.

    Args:
        jobs: photos to fetch (duplicates by destination are fetched once).
        status_path: the JSONL status file (appended to).
        workers: concurrent connections (threads).
        timeout: seconds to wait for a connection or for data before giving up on a try.
        retries: extra tries after a transient failure; waits ``backoff * 2**try`` (+ jitter).
        progress: ``(done, total)`` callback.

    Returns:
        Counts of what happened; failures are not raised (the sharder counts the photos as
        ``missing``).
    """
    start = time.monotonic()
    status_path = Path(status_path)
    status_path.parent.mkdir(parents=True, exist_ok=True)
    summary = DownloadSummary()
    todo = _still_to_fetch(jobs, read_status(status_path), summary)
    fetcher = _Fetcher(_StatusLog(status_path), timeout, retries, backoff, user_agent)
    try:
        if todo:
            _fetch_all(todo, fetcher, workers, summary, progress)
    finally:
        fetcher.log.close()
    summary.seconds = time.monotonic() - start
    return summary


def _still_to_fetch(
    jobs: Iterable[DownloadJob], previous: dict[str, dict], summary: DownloadSummary
) -> list[DownloadJob]:
    """The jobs (one per destination) not on disk yet and not failed for good earlier."""
    unique: dict[Path, DownloadJob] = {}
    for job in jobs:
        unique.setdefault(Path(job.dest), job)
    todo: list[DownloadJob] = []
    for job in unique.values():
        summary.requested += 1
        if job.dest.exists() and job.dest.stat().st_size > 0:
            summary.cached += 1
            continue
        prev = previous.get(job.url)
        if prev is not None and prev.get("status") == "failed" and prev.get("permanent"):
            summary.skipped += 1
            continue
        todo.append(job)
    return todo


def _fetch_all(
    todo: list[DownloadJob],
    fetcher: _Fetcher,
    workers: int,
    summary: DownloadSummary,
    progress: ProgressFn | None,
) -> None:
    """Run the fetches on ``workers`` threads, counting each outcome as it comes."""
    total = len(todo)
    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [pool.submit(fetcher.fetch, job) for job in todo]
        for fut in as_completed(futures):
            kind, attempts, nbytes = fut.result()
            summary.retries += max(0, attempts - 1)
            if kind == "ok":
                summary.downloaded += 1
                summary.bytes += nbytes
            else:
                summary.failed += 1
                summary.errors[kind] += 1
            done += 1
            if progress is not None:
                progress(done, total)
    except BaseException:
        # Ctrl-C: drop what has not started; the tries in flight end by their timeout
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _StatusLog:
    """The append-only JSONL status file, shared by the fetching threads."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def record(self, rec: dict) -> None:
        rec["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


class _Fetcher:
    """One job at a time: tries with backoff, the file written atomically, the outcome logged."""

    def __init__(
        self, log: _StatusLog, timeout: float, retries: int, backoff: float, user_agent: str
    ):
        self.log = log
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.user_agent = user_agent

    def fetch(self, job: DownloadJob) -> tuple[str, int, int]:
        """(outcome kind, attempts, bytes) of one job; ``ok`` when the file is written."""
        scheme = urlsplit(job.url).scheme.lower()
        base = {"url": job.url, "path": str(job.dest)}
        if scheme not in ("http", "https"):
            self.log.record(
                {
                    **base,
                    "status": "failed",
                    "permanent": True,
                    "error": "unsupported_url",
                    "detail": f"scheme {scheme or '(none)'!r}",
                    "attempts": 0,
                }
            )
            return "unsupported_url", 0, 0
        data, attempt, last = self._try(job.url)
        if data is not None:
            atomic_write_bytes(job.dest, data)
            self.log.record(
                {
                    **base,
                    "status": "ok",
                    "http_status": 200,
                    "attempts": attempt,
                    "bytes": len(data),
                }
            )
            return "ok", attempt, len(data)
        assert last is not None
        self.log.record(
            {
                **base,
                "status": "failed",
                "permanent": isinstance(last, _Permanent),
                "error": last.kind,
                "detail": str(last),
                "http_status": last.http_status,
                "attempts": attempt,
            }
        )
        return last.kind, attempt, 0

    def _try(self, url: str) -> tuple[bytes | None, int, _Transient | _Permanent | None]:
        """(body or None, attempts made, the last failure): a permanent failure ends at once,
        a transient one is tried again after ``backoff * 2**try`` (+ jitter)."""
        rng = random.Random(url)
        last: _Transient | _Permanent | None = None
        attempt = 0
        for attempt in range(1, self.retries + 2):
            try:
                return _fetch_once(url, self.timeout, self.user_agent), attempt, None
            except _Permanent as exc:
                last = exc
                break
            except _Transient as exc:
                last = exc
                if attempt <= self.retries:
                    time.sleep(self.backoff * 2 ** (attempt - 1) * (1.0 + 0.25 * rng.random()))
        return None, attempt, last
