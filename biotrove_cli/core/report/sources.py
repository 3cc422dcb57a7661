"""The inputs of ``biotrove report``: what each file or folder given is, read into plain records.

A source is recognised by what it holds, not by its name:

* ``classify``: the records of ``biotrove classify`` (CSV, JSON, JSONL or Parquet: a ``path``,
  ``prediction``, ``score`` and ``error`` per row);
* ``classify_summary``: its ``--summary`` document (``n_classified``...);
* ``eval``: the records of ``biotrove eval`` (``model``, ``rank`` or ``scope``, ``top1``...);
* ``eval_summary``: its ``--summary`` document (``models``, ``ranks``, ``ci``...);
* ``per_class`` and ``confusion``: the CSVs of ``eval --per-class`` and ``eval --confusion``;
* ``run``: a run folder of ``biotrove train``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError
from biotrove_cli.core.layout import is_run_dir, is_search_dir

KINDS = ("classify", "classify_summary", "eval", "eval_summary", "per_class", "confusion", "run")
WHAT = (
    "classify results (CSV/JSON/JSONL/Parquet), eval records (--format json/jsonl/csv/parquet), "
    "an eval or classify --summary file, eval's --per-class or --confusion CSV, or a run folder"
)
#: The number columns of each kind of CSV (eval records: every column but these text ones).
_NUMBERS = {
    "classify": {"prediction", "score"},
    "per_class": {
        "support",
        "correct_top1",
        "recall_top1",
        "correct_top5",
        "recall_top5",
        "predicted",
        "precision",
    },
    "confusion": {"count"},
}
_EVAL_TEXT = {"model", "model_spec", "text_type", "mode", "rank", "scope", "group"}


@dataclass
class Source:
    """One input of the report: its kind and what it holds (records, or a document)."""

    kind: str
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    doc: dict[str, Any] = field(default_factory=dict)
    named_by: Source | None = None  # the summary that names this file (not given itself)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)


def read_source(path: str | Path) -> Source:
    """Read one input and tell what it is.

    Raises:
        InputError: missing, unreadable, or none of the kinds the report knows.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder", hint=f"give {WHAT}")
    if p.is_dir():
        if is_run_dir(p):
            return Source("run", p)
        hint = "a run folder holds config.yaml and checkpoints/ (biotrove train --run-dir)"
        if is_search_dir(p):
            hint = f"give one trial's run folder: {p}/runs/TRIAL_ID"
        elif any(p.iterdir()):
            hint += "; for a folder of photos, run `biotrove classify FOLDER --report report.html`"
        raise InputError(f"{p}: not a run folder", hint=hint)
    data, from_csv = _read_data(p)
    if isinstance(data, dict):
        return _document(p, data)
    source = _records(p, data)
    if from_csv:  # CSV cells are text: numbers become numbers, empty cells None (as in JSON)
        numbers = _NUMBERS.get(source.kind)
        for row in source.rows:
            for key, value in row.items():
                number = key in numbers if numbers is not None else key not in _EVAL_TEXT
                row[key] = _cell(value, number)
    return source


# -- reading -------------------------------------------------------------------------------------
def _read_data(p: Path) -> tuple[list[dict[str, Any]] | dict[str, Any], bool]:
    """The file's records or document, and whether they came from a CSV (text cells)."""
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return _read_parquet(p), False
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a text file", hint=f"give {WHAT}") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    head = text.lstrip()[:1]
    if not head:
        raise InputError(f"{p}: the file is empty", hint=f"give {WHAT}")
    if suffix in (".json", ".jsonl", ".ndjson") or head in "[{":
        return _read_json(p, text), False
    return _read_csv(p, text), True


def _read_parquet(p: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(p).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"{p}: not a readable Parquet file ({exc})") from None


def _read_json(p: Path, text: str) -> list[dict[str, Any]] | dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None  # maybe JSON lines
    if data is None:
        data = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except ValueError as exc:
                raise InputError(
                    f"{p}: line {i} is not JSON ({exc})",
                    hint="a JSON array of records, JSON lines, or a --summary document",
                ) from None
    if isinstance(data, dict):
        return data
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{p}: JSON that is neither records nor a document", hint=f"give {WHAT}")
    return data


def _read_csv(p: Path, text: str) -> list[dict[str, Any]]:
    if "\x00" in text[:4096]:
        raise InputError(f"{p}: not a text file", hint=f"give {WHAT}")
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"{p}: not valid CSV ({exc})", hint=f"give {WHAT}") from None
    if not reader.fieldnames or len(reader.fieldnames) < 2:
        hint = f"give {WHAT}"
        if any(c in text[:2000] for c in "┃│"):  # a --format table file
            hint = "that is a table for people; write machine records with --format csv or json"
        raise InputError(f"{p}: not a table of records", hint=hint)
    return [{k: v for k, v in r.items() if k is not None} for r in rows]


def _cell(value: Any, number: bool) -> Any:
    """A CSV cell as the value the JSON records hold: numbers as numbers, empty as None."""
    if value is None or value == "":
        return None
    if not number or not isinstance(value, str):
        return value
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        return value
    return None if math.isnan(f) else f


# -- recognising -----------------------------------------------------------------------------------
def _document(p: Path, doc: dict[str, Any]) -> Source:
    if isinstance(doc.get("models"), list) and ("ranks" in doc or "ci" in doc):
        return Source("eval_summary", p, doc=doc)
    if "n_classified" in doc:
        return Source("classify_summary", p, doc=doc)
    raise InputError(
        f"{p}: a JSON document, but not an eval or classify --summary file",
        hint=f"give {WHAT}",
    )


def _records(p: Path, rows: list[dict[str, Any]]) -> Source:
    if not rows:
        raise InputError(f"{p}: holds no records", hint="rerun the command that wrote it")
    keys = set(rows[0])
    if {"path", "prediction", "score", "error"} <= keys:
        return Source("classify", p, rows=rows)
    if {"model", "top1"} <= keys and ("rank" in keys or "scope" in keys):
        return Source("eval", p, rows=rows)
    if {"class", "support", "recall_top1"} <= keys:
        return Source("per_class", p, rows=rows)
    if {"truth", "predicted", "count"} <= keys:
        return Source("confusion", p, rows=rows)
    cols = ", ".join(list(rows[0])[:8])
    raise InputError(f"{p}: records of an unknown kind (columns {cols})", hint=f"give {WHAT}")
