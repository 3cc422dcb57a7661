"""The records ``biotrove classify`` writes (columns and rows), and resuming into an earlier
output file.

Resume: with an output file, :func:`scan_output` repairs a torn last line, drops the last
image's rows (they may be incomplete) and returns the paths already done, so a rerun appends
each remaining image exactly once.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

LINEAGE_COLUMNS = tuple(r.value for r in RANKS)
COLUMNS = (
    "path",
    "rank",
    "prediction",
    "name",
    "common_name",
    *LINEAGE_COLUMNS,
    "score",
    "error",
)
TABLE_COLUMNS = ("path", "prediction", "name", "common_name", "score", "error")
STREAM_FORMATS = ("csv", "jsonl")


# -- rows -----------------------------------------------------------------------------------------
def prediction_row(
    bank: LabelBank, path: str, rank: Rank | None, pred: int | None, cls: int, score: float
) -> dict[str, Any]:
    """One prediction: class ``cls`` of ``bank`` at ``rank`` (None: custom labels), its lineage
    down to that rank, and its probability."""
    row: dict[str, Any] = {"path": path, "rank": "", "prediction": pred, "name": ""}
    row["common_name"] = ""
    for col in LINEAGE_COLUMNS:
        row[col] = ""
    if rank is None:  # custom labels
        row["rank"] = "label"
        row["name"] = bank.custom_labels[cls]
    else:
        rc = bank.classes(rank)
        rep = rc.taxa[cls]
        row["rank"] = rank.value
        row["name"] = rc.names[cls]
        for r in RANKS[: rank.index + 1]:
            row[r.value] = rep.name_at(r)
        if rank is Rank.SPECIES:
            row["common_name"] = rep.common_name
    row["score"] = round(float(score), 6)
    row["error"] = None  # null in JSON: `jq 'select(.error)'` finds the failures only
    return row


def error_row(path: str, rank: str, reason: str) -> dict[str, Any]:
    """The row of an image that was not classified, with the reason."""
    row: dict[str, Any] = {c: "" for c in COLUMNS}
    row.update({"path": path, "rank": rank, "prediction": None, "score": None})
    row["error"] = reason
    return row


# -- resume -------------------------------------------------------------------------------------
def scan_output(path: str | Path, fmt: str) -> set[str]:
    """Repair an earlier run's output file and return the image paths it already holds.

    The file is read with a real CSV (or JSON) parser, so a path holding a newline, quotes or
    commas is one record, found again as itself. A torn last record (cut inside a line or inside
    a quoted field) is cut off, and so are all rows of the last image in the file, which an
    interruption may have left incomplete: that image is classified again.

    Raises:
        InputError: the file is not an output of ``classify`` in this format.
        UsageError: a format ``--resume`` cannot append to.
    """
    path = Path(path)
    if fmt not in STREAM_FORMATS:
        raise UsageError(f"--resume works with csv and jsonl output, not {fmt}")
    if not path.is_file():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # drop a torn last line
    records = _csv_records(path, data, end) if fmt == "csv" else _jsonl_records(path, data, end)
    cut = records.end
    rows = records.rows
    if rows:
        last = rows[-1][1]
        i = len(rows) - 1
        while i > 0 and rows[i - 1][1] == last:
            i -= 1
        cut = rows[i][0]
        rows = rows[:i]
    _truncate(path, cut, len(data))
    return {p for _, p in rows}


class _Records:
    """The image path of every complete record of an output file, with its byte offset."""

    def __init__(self, end: int):
        self.rows: list[tuple[int, str]] = []  # (byte offset of the record, image path)
        self.end = end  # where the complete records end


class _Lines:
    """The lines of ``data[:end]`` as text, remembering where the next one starts (a CSV
    record may span lines: its offset is where its first line starts)."""

    def __init__(self, data: bytes, end: int):
        self.data = data
        self.end = end
        self.pos = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= self.end:
            raise StopIteration
        nl = self.data.index(b"\n", self.pos) + 1
        line = self.data[self.pos : nl]
        self.pos = nl
        return line.decode("utf-8", "replace")


def _csv_records(path: Path, data: bytes, end: int) -> _Records:
    out = _Records(end)
    lines = _Lines(data, end)
    reader = csv.reader(lines, strict=True)  # strict: a torn quoted field is an error
    try:
        header = next(reader)
    except StopIteration:
        out.end = 0
        return out
    except csv.Error:
        header = []
    if "path" not in header:
        raise InputError(
            f"{path}: not a classify CSV (no 'path' column), cannot resume into it",
            hint="pick another -o file, or drop --resume to replace it",
        )
    if tuple(header) != COLUMNS:
        raise InputError(
            f"{path}: its columns differ from this version's ({', '.join(header)})",
            hint="drop --resume to replace the file, or write to a new one",
        )
    while True:
        start = lines.pos
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if lines.pos < end:
                raise InputError(
                    f"{path}: line {reader.line_num} is not valid CSV ({exc}), cannot resume "
                    "into it",
                    hint="drop --resume to replace the file, or write to a new one",
                ) from None
            out.end = start  # the file ends inside a quoted field: a torn record
            break
        if fields:
            out.rows.append((start, fields[0]))
    return out


def _jsonl_records(path: Path, data: bytes, end: int) -> _Records:
    out = _Records(end)
    lines = _Lines(data, end)
    i = 0
    while lines.pos < end:
        start = lines.pos
        raw = next(lines)
        i += 1
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError as exc:
            raise InputError(
                f"{path}: line {i} is not JSON ({exc}), cannot resume into it",
                hint="remove the bad line, or drop --resume to replace the file",
            ) from None
        if not isinstance(rec, dict) or "path" not in rec:
            raise InputError(
                f"{path}: line {i} is not a classify record (no 'path')",
                hint="pick another -o file, or drop --resume to replace it",
            )
        out.rows.append((start, str(rec["path"])))
    return out


def _truncate(path: Path, size: int, old: int) -> None:
    if size == old:
        return
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())
