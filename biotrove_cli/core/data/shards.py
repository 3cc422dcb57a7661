"""Reading shards back: which shards a user means, how many samples they hold, and their samples.

Shards may be local or remote (:mod:`biotrove_cli.core.data.urls`: http(s), s3://, gs://,
``pipe:``); every one is opened through webdataset's URL opener
(:mod:`biotrove_cli.core.data.streams`) and read with webdataset's tar-to-samples iterators.
``sizes.json`` and ``taxonomy.parquet`` are read from beside the shards the same way.

A shard that cannot be read is retried with backoff (``ReadOptions.retries``); one that still
fails, or whose tar ends early (truncated, or fewer samples than ``sizes.json`` says), becomes a
:class:`ShardProblem` handed to the caller, who counts it and goes on (or stops, under
``--strict``). The samples read before a failure are kept; a retry re-reads the shard and skips
them, so a retried shard yields exactly the samples of a clean read.

The folder a dataset lives in is described (and its file names owned) by
:mod:`biotrove_cli.core.layout`; what one sample holds, by :mod:`biotrove_cli.core.data.sample`.
"""

from __future__ import annotations

import json
import logging
import random
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.data import urls
from biotrove_cli.core.data.streams import SourceError, open_location, read_bytes
from biotrove_cli.core.errors import InputError
from biotrove_cli.core.fmt import plural
from biotrove_cli.core.layout import SHARD_GLOB, SIZES, SPLITS, TAXONOMY

log = logging.getLogger("biotrove")

#: what a tar that ends early or is corrupt raises inside webdataset's iterators
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, zlib.error)


@dataclass(frozen=True)
class ReadOptions:
    """How hard to try: retries after a failed open or read, the stall timeout of remote reads
    (seconds without a byte), and the first retry's delay (doubled each time, at most 30 s)."""

    retries: int = 3
    timeout: float = 60.0
    backoff: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1, 2, ...), with jitter so that many
        workers do not retry in step."""
        base = min(self.backoff * 2 ** (attempt - 1), 30.0)
        return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class ShardProblem:
    """A shard that could not be read (``failed``) or that ended early (``truncated``)."""

    location: str
    kind: str  # "failed" | "truncated"
    samples: int  # samples read from it (they were used)
    expected: int | None  # samples sizes.json says it holds
    reason: str
    tries: int = 1

    @property
    def lost(self) -> int | None:
        """Samples it should have held but did not give (None: sizes.json does not say)."""
        return None if self.expected is None else max(0, self.expected - self.samples)

    def message(self) -> str:
        """One line naming the shard, what happened and what it cost."""
        if self.kind == "failed":
            tries = plural(self.tries, "try", "tries")
            head = f"{self.location}: unreadable after {tries} ({self.reason}); skipped"
        else:
            head = f"{self.location}: the shard ended early ({self.reason})"
        if self.expected is not None:
            return (
                f"{head}: {self.samples} of {self.expected} samples read (sizes.json), "
                f"{plural(self.lost or 0, 'sample')} lost"
            )
        if self.kind == "failed" and not self.samples:
            return head
        got = plural(self.samples, "sample")
        return f"{head} after {got}; sizes.json does not say how many it held"

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.location,
            "kind": self.kind,
            "samples": self.samples,
            "expected": self.expected,
            "lost": self.lost,
            "reason": self.reason,
            "tries": self.tries,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardProblem:
        """The problem :meth:`to_dict` wrote."""
        return cls(d["shard"], d["kind"], d["samples"], d["expected"], d["reason"], d["tries"])


# -- which shards ------------------------------------------------------------------------------
def resolve_shards(
    spec: str | Path, split: str | None = "train", options: ReadOptions | None = None
) -> list[str]:
    """The shard locations a user means by ``spec``.

    Accepts a dataset folder (its ``split`` subfolder), a split folder, one ``.tar``, a brace
    pattern (``dir/shard-{000000..000009}.tar``) or a ``::``-separated list; the same for
    http(s)://, s3:// and gs:// URLs and ``pipe:`` commands. A remote folder is listed through
    its ``sizes.json`` (``URL/SPLIT/sizes.json``, else ``URL/sizes.json``).

    Raises:
        InputError: nothing matches, named local shards do not exist, or a remote location
            needs a tool that is not installed.
    """
    text = str(spec)
    if any(urls.is_remote(p) for p in urls.split_list(text)):
        return _resolve_remote(text, split, options or ReadOptions())
    path = Path(text)
    if path.is_dir():
        return [str(p) for p in _list_folder(path, text, split)]
    if "{" in text or "::" in text:
        files = urls.expand(text)
        missing = [p for p in files if not Path(p).is_file()]
        if missing:
            raise InputError(
                f"{len(missing)} of {len(files)} shards in {text!r} do not exist "
                f"(e.g. {missing[0]})",
                hint="check the brace pattern",
            )
        return files
    if path.is_file():
        return [text]
    raise InputError(
        f"{text}: no such shard folder or file",
        hint="pass a folder written by `biotrove shard`, a .tar, a brace pattern or a URL",
    )


def _list_folder(path: Path, text: str, split: str | None) -> list[Path]:
    if split and (path / split).is_dir():
        path = path / split
    tars = sorted(path.glob(SHARD_GLOB)) or sorted(path.glob("*.tar"))
    if not tars:
        where = f"{path}" + (f" (split {split!r})" if split else "")
        splits = [s for s in SPLITS if (Path(text) / s).is_dir()]
        raise InputError(
            f"{where}: no shards (*.tar) in this folder",
            hint=(
                f"splits here: {', '.join(splits)}"
                if splits
                else "write shards with `biotrove shard`, or point at the folder holding *.tar"
            ),
        )
    return tars


def _resolve_remote(text: str, split: str | None, options: ReadOptions) -> list[str]:
    out: list[str] = []
    for part in urls.split_list(text):
        if ".tar" in part or "{" in part or part.lower().startswith(urls.PIPE):
            out.extend(urls.expand(part))
        else:
            out.extend(_list_remote_folder(part, split, options))
    checked: set[str] = set()
    for loc in out:  # a missing tool fails now, once per scheme (per program for pipe:)
        kind = loc.split()[0] if loc.lower().startswith(urls.PIPE) else loc.split(":", 1)[0]
        if kind not in checked:
            checked.add(kind)
            urls.command_for(loc, options.timeout)
    return out


def _list_remote_folder(base: str, split: str | None, options: ReadOptions) -> list[str]:
    """The shards of a remote folder, named by its sizes.json (a URL cannot be listed)."""
    base = base.rstrip("/")
    tried = []
    for folder in ([urls.join(base, split)] if split else []) + [base]:
        where = urls.join(folder, SIZES)
        urls.command_for(where, options.timeout)
        try:
            sizes = parse_sizes(fetch(where, options), where)
        except SourceError as exc:
            tried.append(f"{where} ({exc.reason})")
            continue
        return [urls.join(folder, name) for name in sorted(sizes)]
    raise InputError(
        f"{base}: cannot list a remote folder, and no sizes.json names its shards: "
        + "; ".join(tried),
        hint="give the shards as a brace pattern, e.g. "
        f"{base}/{split + '/' if split else ''}shard-{{000000..000099}}.tar",
    )


# -- sizes.json and taxonomy.parquet beside the shards ------------------------------------------
def fetch(location: str, options: ReadOptions | None = None) -> bytes:
    """The bytes of a (small) file, local or remote, retried like a shard.

    Raises:
        SourceError: it still cannot be read (or does not exist).
    """
    options = options or ReadOptions()
    attempt = 0
    while True:
        try:
            return read_bytes(location, options.timeout)
        except SourceError as exc:
            if exc.permanent or attempt >= options.retries:
                raise
            attempt += 1
            time.sleep(options.delay(attempt))


def parse_sizes(data: bytes, where: str = SIZES) -> dict[str, int]:
    """``sizes.json``: shard name -> sample count.

    Raises:
        SourceError: it is not such a mapping.
    """
    try:
        raw = json.loads(data)
        return {str(k): int(v) for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise SourceError(f"{where} is not a mapping of shard names to counts", True) from exc


def read_sizes(split_dir: Path) -> dict[str, int]:
    """The ``sizes.json`` of a local split folder ({} when missing or unreadable)."""
    p = Path(split_dir) / SIZES
    if not p.is_file():
        return {}
    try:
        return parse_sizes(p.read_bytes())
    except (OSError, SourceError):
        return {}


@dataclass
class ShardSet:
    """The shards of a spec, with what ``sizes.json`` says they hold."""

    spec: str
    locations: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # location -> samples
    sizes_note: str = ""  # why some sizes are unknown
    options: ReadOptions = field(default_factory=ReadOptions)

    def __len__(self) -> int:
        return len(self.locations)

    @property
    def total(self) -> int | None:
        """Samples in all shards (sizes.json); None when it does not cover every shard."""
        if any(loc not in self.sizes for loc in self.locations):
            return None
        return sum(self.sizes[loc] for loc in self.locations)

    @property
    def split(self) -> str:
        """The name of the folder holding the (first) shard."""
        return urls.folder_name(self.locations[0]) if self.locations else ""

    def expected(self) -> tuple[int | None, ...]:
        """sizes.json's count per shard, in order (None where it does not say)."""
        return tuple(self.sizes.get(loc) for loc in self.locations)


def open_shards(
    spec: str | Path, split: str | None = "train", options: ReadOptions | None = None
) -> ShardSet:
    """The shards of ``spec`` (:func:`resolve_shards`) and their sizes.json counts."""
    options = options or ReadOptions()
    locations = resolve_shards(spec, split, options)
    shards = ShardSet(str(spec), locations, options=options)
    by_file: dict[str, list[str]] = {}
    for loc in locations:
        by_file.setdefault(urls.sibling(loc, SIZES) or "", []).append(loc)
    notes = []
    for where, locs in by_file.items():
        if not where:
            notes.append(f"the command {locs[0]!r} names no .tar file to find sizes.json beside")
            continue
        try:
            sizes = parse_sizes(fetch(where, options), where)
        except SourceError as exc:
            notes.append(f"no sizes.json beside the shards ({where}: {exc.reason})")
            continue
        for loc in locs:
            name = urls.shard_name(loc)
            if name in sizes:
                shards.sizes[loc] = sizes[name]
            elif len(notes) < 3:
                notes.append(f"{where} does not list {name}")
    shards.sizes_note = "; ".join(notes)
    return shards


@contextmanager
def taxonomy_file(shards: ShardSet) -> Iterator[tuple[Path | None, str]]:
    """The dataset's ``taxonomy.parquet`` (beside the shards or one folder up) as a local file,
    and where it came from; ``(None, why)`` when there is none. A remote one is fetched into a
    temporary folder that is removed on exit."""
    if not shards.locations:
        yield None, "no shards"
        return
    first = shards.locations[0]
    if not urls.is_remote(first):
        folder = Path(first).parent
        for cand in (folder, folder.parent):
            if (cand / TAXONOMY).is_file():
                yield cand / TAXONOMY, str(cand / TAXONOMY)
                return
        yield None, f"no {TAXONOMY} in {folder} or {folder.parent}"
        return
    tried = []
    for up in (0, 1):
        where = urls.sibling(first, TAXONOMY, up)
        if where is None:
            break
        try:
            data = fetch(where, shards.options)
        except SourceError as exc:
            tried.append(f"{where}: {exc.reason}")
            continue
        with tempfile.TemporaryDirectory(prefix="biotrove-taxonomy-") as tmp:
            path = Path(tmp) / TAXONOMY
            path.write_bytes(data)
            yield path, where
        return
    yield None, "; ".join(tried) or f"cannot tell where {TAXONOMY} is beside {first}"


# -- samples -----------------------------------------------------------------------------------
def _tar_samples(stream: Any, location: str) -> Iterator[dict[str, Any]]:
    """webdataset's tar iterators: members grouped into samples by key (case kept)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    files = tar_file_expander([{"url": location, "stream": stream}])
    return group_by_keys(files, lcase=False)


def _tar_reason(exc: BaseException) -> str:
    first = str(exc.args[0]) if exc.args else type(exc).__name__
    return first.split(" @ ")[0]  # webdataset appends " @ <stream object>"


class Prefetch:
    """Starts reading the next remote shard while the current one is read, so that a stream
    does not wait for a command to start and a connection to open at every shard."""

    def __init__(self, options: ReadOptions):
        self.options = options
        self.pending: tuple[str, Any] | None = None

    def start(self, location: str) -> None:
        """Open ``location`` now (remote only); a failure shows when it is read."""
        self.close()
        if urls.is_remote(location):
            try:
                self.pending = (location, open_location(location, self.options.timeout))
            except (SourceError, InputError):
                pass

    def take(self, location: str) -> Any:
        """The stream opened for ``location``, or None (any other is closed)."""
        if self.pending is not None and self.pending[0] == location:
            stream, self.pending = self.pending[1], None
            return stream
        self.close()
        return None

    def close(self) -> None:
        if self.pending is not None:
            self.pending[1].close()
            self.pending = None


def read_shard(
    location: str | Path,
    *,
    expected: int | None = None,
    options: ReadOptions | None = None,
    on_problem: Callable[[ShardProblem], None] | None = None,
    stream: Any = None,
) -> Iterator[dict[str, Any]]:
    """Samples of one shard as dicts ``{"__key__", "__url__", ext: bytes, ...}``.

    A failed open or read is retried (``options``); a retry skips the samples already given.
    When the shard still fails, or ends before ``expected`` samples (sizes.json), the
    :class:`ShardProblem` goes to ``on_problem`` and the iteration ends; without
    ``on_problem`` it is raised as an InputError. ``stream``: the shard already opened
    (:class:`Prefetch`), for the first try.
    """
    location = str(location)
    options = options or ReadOptions()
    got = tries = 0
    problem: ShardProblem | None = None
    while True:
        tries += 1
        seen = 0
        try:
            if stream is None:
                stream = open_location(location, options.timeout)
            with stream:
                for sample in _tar_samples(stream, location):
                    seen += 1
                    if seen > got:  # after a retry: skip what was already given
                        got += 1
                        yield sample
            break
        except (SourceError, OSError) as exc:
            reason = exc.reason if isinstance(exc, SourceError) else (exc.strerror or str(exc))
            permanent = isinstance(exc, SourceError) and exc.permanent
            if permanent or tries > options.retries:
                problem = ShardProblem(location, "failed", got, expected, reason, tries)
                break
            log.debug("%s: %s; retrying (%d of %d)", location, reason, tries, options.retries)
            stream = None
            time.sleep(options.delay(tries))
        except _TAR_ERRORS as exc:
            problem = ShardProblem(location, "truncated", got, expected, _tar_reason(exc), tries)
            break
    if problem is None and expected is not None and got < expected:
        problem = ShardProblem(location, "truncated", got, expected, "the tar ends cleanly", tries)
    if problem is not None:
        if on_problem is None:
            raise InputError(
                problem.message(), hint="re-run `biotrove shard` on its folder to redo it"
            )
        on_problem(problem)
