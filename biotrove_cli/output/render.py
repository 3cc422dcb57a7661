"""Records -> Rich table | CSV | JSON | JSONL | Parquet, on stdout or into a file.

``auto`` is a Rich table when stdout is a terminal and CSV when piped. CSV and JSONL stream: each
record is written (and flushed) as it arrives, so a pipeline sees results at once and memory stays
flat. JSON, tables and Parquet are written when the sink closes; files are replaced atomically
unless the sink appends (``--resume``).

Machine formats are tables a program reads as they are: JSON is a plain array of records (what
``pandas.read_json`` and duckdb's ``read_json`` take), a missing value is ``null`` in JSON/JSONL
and an empty cell in CSV, and CSV keeps six decimals as JSONL does. What a run says about itself
(counts, timings, provenance) is its summary: a line on stderr, and a JSON document written to
``--summary FILE``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any

from rich.table import Table

from biotrove_cli.core.fmt import plain
from biotrove_cli.output import console


class Format(str, Enum):
    auto = "auto"
    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"


_SUFFIX = {
    ".csv": Format.csv,
    ".json": Format.json,
    ".jsonl": Format.jsonl,
    ".ndjson": Format.jsonl,
    ".parquet": Format.parquet,
    ".txt": Format.table,
}


def resolve_format(fmt: Format | str, output: str | Path | None) -> Format:
    """Turn ``auto`` into a concrete format: by file suffix, else table on a TTY, else CSV."""
    fmt = Format(fmt)
    to_stdout = output is None or str(output) == "-"
    if fmt is Format.auto:
        if not to_stdout:
            return _SUFFIX.get(Path(str(output)).suffix.lower(), Format.csv)
        return Format.table if console.stdout_is_tty() else Format.csv
    if fmt is Format.parquet and to_stdout:
        from biotrove_cli.core.errors import UsageError

        raise UsageError("--format parquet needs a file", hint="add -o FILE.parquet")
    return fmt


def _cell(value: Any, float_digits: int = 4) -> str:
    """A value as table text (4 decimals)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value and abs(value) < 1e-3:  # learning rates, epsilons: keep their digits
            return f"{value:.{float_digits}g}"
        return (
            f"{value:.{float_digits}f}".rstrip("0").rstrip(".")
            if value != int(value)
            else str(value)
        )
    if isinstance(value, (list, tuple)):
        return ";".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(plain(value), sort_keys=True)
    return str(value)


def _csv_cell(value: Any) -> str:
    """A value as CSV text: floats keep six decimals (six significant digits below 1e-4, so a
    small number never reads as 0), as JSONL does."""
    if isinstance(value, float) and math.isfinite(value) and value != int(value):
        return repr(round(value, 6)) if abs(value) >= 1e-4 else f"{value:.6g}"
    return _cell(value)


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    """Write a run's summary document (``--summary FILE``) as JSON, atomically."""
    from biotrove_cli.core.io import atomic_write_text

    text = json.dumps(plain(summary), indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(Path(path), text)


class RecordSink:
    """Write records one at a time in a chosen format.

    Args:
        fmt: a format (``auto`` is resolved here).
        output: a path, ``-`` or None for stdout.
        columns: column order; the first record's keys otherwise (CSV/table).
        append: append to an existing CSV/JSONL file instead of replacing it (``--resume``).
        title: the table title.
        summary: what the run says about itself, written to ``summary_path`` as JSON when the
            sink closes (it may be set or updated until then).
        summary_path: ``--summary FILE``; None writes no summary file.
    """

    def __init__(
        self,
        fmt: Format | str = Format.auto,
        output: str | Path | None = None,
        columns: Sequence[str] | None = None,
        append: bool = False,
        title: str | None = None,
        summary: dict[str, Any] | None = None,
        table_columns: Sequence[str] | None = None,
        summary_path: str | Path | None = None,
    ):
        self.output = None if output is None or str(output) == "-" else Path(str(output))
        self.fmt = resolve_format(fmt, self.output)
        self.columns = list(columns) if columns else None
        self.table_columns = list(table_columns) if table_columns else None
        self.append = append
        self.title = title
        self.summary = summary
        self.summary_path = summary_path
        self.count = 0
        self._rows: list[dict[str, Any]] = []
        self._fh: IO[str] | None = None
        self._csv: Any = None
        self._tmp: Path | None = None
        self._target: Path | None = None  # what the temp file replaces (a symlink's target)
        self._direct = False  # a special file (/dev/null, a FIFO): no temp file, no fsync
        self._closed = False
        self._parquet_writer: Any = None

    # streaming formats open their stream on first write
    def _stream(self) -> IO[str]:
        if self._fh is None:
            if self.output is None:
                self._fh = sys.stdout
                return self._fh
            from biotrove_cli.core.io import is_special_file, name_os_errors, write_target

            target = write_target(self.output)
            with name_os_errors(target):
                if is_special_file(target):  # /dev/null, a FIFO: written as it is
                    self._fh = open(target, "a" if self.append else "w", encoding="utf-8")
                    self._direct = True
                elif self.append:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._fh = open(target, "a", encoding="utf-8", newline="")
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                    self._target = target
                    self._fh = open(self._tmp, "w", encoding="utf-8", newline="")
        return self._fh

    def write(self, record: dict[str, Any]) -> None:
        from biotrove_cli.core.io import name_os_errors

        with name_os_errors(self.output or "<stdout>"):
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self.columns is None:
            self.columns = list(record)
        if self.fmt is Format.csv:
            fh = self._stream()
            if self._csv is None:
                self._csv = csv.DictWriter(
                    fh, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n"
                )
                if not (
                    self.append
                    and self.output is not None
                    and self.output.exists()
                    and self.output.stat().st_size > 0
                ):
                    self._csv.writeheader()
            self._csv.writerow({k: _csv_cell(record.get(k)) for k in self.columns})
            fh.flush()
        elif self.fmt is Format.jsonl:
            fh = self._stream()
            fh.write(json.dumps(plain(record), ensure_ascii=False) + "\n")
            fh.flush()
        else:
            self._rows.append(record)

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def sync(self) -> None:
        """Flush and fsync a file being appended to (resume points)."""
        from biotrove_cli.core.io import name_os_errors

        if self._fh is not None and self._fh is not sys.stdout:
            with name_os_errors(self.output or "<stdout>"):
                self._fh.flush()
                if not self._direct:
                    os.fsync(self._fh.fileno())

    def close(self) -> None:
        from biotrove_cli.core.io import name_os_errors

        if self._closed:
            return
        self._closed = True
        with name_os_errors(self.output or "<stdout>"):
            self._write_records()
        where = "stdout" if self.output is None else str(Path(self.output).absolute())
        console.debug(f"wrote {self.count} records as {self.fmt.value} to {where}")
        if self.summary_path is not None and self.summary is not None:
            write_summary(self.summary_path, self.summary)

    def _write_records(self) -> None:
        if self.fmt in (Format.csv, Format.jsonl):
            if self._fh is None and self.fmt is Format.csv and self.columns and not self.append:
                self._stream()
                csv.DictWriter(self._fh, fieldnames=self.columns, lineterminator="\n").writeheader()
            self._finish_stream()
            return
        if self.fmt is Format.table:
            self._print_table()
            return
        if self.fmt is Format.json:
            payload = [plain(r) for r in self._rows]
            text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
            if self.output is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                from biotrove_cli.core.io import atomic_write_text

                atomic_write_text(self.output, text)
            return
        if self.fmt is Format.parquet:
            import pyarrow as pa

            from biotrove_cli.core.io import atomic_write_parquet

            cols = self.columns or []
            table = pa.table({c: [plain(r.get(c)) for r in self._rows] for c in cols})
            assert self.output is not None
            atomic_write_parquet(table, self.output)

    def abort(self) -> None:
        """Stop without replacing the output (a failed run leaves the old file as it was)."""
        self._closed = True
        if self._fh is not None and self._fh is not sys.stdout:
            with contextlib.suppress(OSError):  # already failing: keep the first error
                if self.append and not self._direct:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                self._fh.close()
            if self._tmp is not None and self._tmp.exists():
                self._tmp.unlink()

    def _finish_stream(self) -> None:
        if self._fh is None or self._fh is sys.stdout:
            if self._fh is sys.stdout:
                sys.stdout.flush()
            return
        self._fh.flush()
        if not self._direct:
            os.fsync(self._fh.fileno())
        self._fh.close()
        if self._tmp is not None:
            assert self._target is not None
            try:
                os.replace(self._tmp, self._target)
            except BaseException:
                with contextlib.suppress(OSError):
                    self._tmp.unlink()
                raise
            from biotrove_cli.core.io import fsync_dir

            fsync_dir(self._target.parent)

    def _print_table(self) -> None:
        cols = self.table_columns or self.columns or []
        table = Table(title=self.title, show_lines=False, header_style="bold")
        for c in cols:
            # right-align only all-number columns (key/value tables mix kinds: keep them left)
            values = [r.get(c) for r in self._rows[:200] if r.get(c) not in (None, "")]
            numeric = bool(values) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            )
            table.add_column(c, justify="right" if numeric else "left", overflow="fold")
        for r in self._rows:
            table.add_row(*[_cell(r.get(c)) for c in cols])
        if self.output is None:
            console.out().print(table)
        else:
            from rich.console import Console

            from biotrove_cli.core.io import atomic_write_text

            buf = io.StringIO()
            Console(file=buf, width=200, force_terminal=False).print(table)
            atomic_write_text(self.output, buf.getvalue())

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def emit(
    records: Iterable[dict[str, Any]],
    fmt: Format | str = Format.auto,
    output: str | Path | None = None,
    **kwargs: Any,
) -> int:
    """Write all records at once; returns how many."""
    with RecordSink(fmt, output, **kwargs) as sink:
        sink.write_many(records)
    return sink.count
