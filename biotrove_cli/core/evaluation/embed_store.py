"""Where ``biotrove embed`` keeps embeddings: Parquet, or ``.npy`` plus an index CSV, written
through resumable segments.

While a job runs, each batch's rows are appended to an Arrow IPC stream in a hidden folder beside
the output (``.NAME.parts/segment-K.arrows``) and flushed, so memory stays flat and a killed run
loses at most the batch in flight. ``--resume`` reads what the final file and the segments hold
(a torn last batch is dropped) and starts a new segment; when the job ends the segments are
combined, in order, into the output, which is written atomically, and the folder goes.

* Parquet: ``path``, ``embedding`` (``fixed_size_list<float32>[dims]``, null for an unreadable
  image), ``model``, ``dims``, ``error`` (null when the image was embedded); ``--text`` rows have
  the class's ``name``, ``common_name``, lineage and ``text`` instead of ``path``/``error``.
* npy: ``NAME.npy`` holds the embeddings of the rows that have one ([N, dims] float32, in order);
  ``NAME.index.csv`` holds every row's other columns and ``row``, its index into the array
  (empty for an unreadable image).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError

EMBEDDING = "embedding"
ROW_GROUP = 65_536  # rows per Parquet row group in the final file


def index_path(npy: Path) -> Path:
    """``embeddings.npy`` -> ``embeddings.index.csv``."""
    return npy.with_name(npy.stem + ".index.csv")


def parts_dir(output: Path) -> Path:
    """Where the segments go: beside the output, or, for a special file (``/dev/null``, a
    FIFO), in the temp folder (never a folder in ``/dev``)."""
    from biotrove_cli.core.io import is_special_file

    if is_special_file(output):
        import tempfile

        return Path(tempfile.gettempdir()) / f".biotrove-{os.getpid()}-{output.name}.parts"
    return output.with_name(f".{output.name}.parts")


def _schema(columns: Sequence[str], dims: int) -> Any:
    import pyarrow as pa

    fields = []
    for c in columns:
        if c == EMBEDDING:
            fields.append(pa.field(c, pa.list_(pa.float32(), dims)))
        elif c == "dims":
            fields.append(pa.field(c, pa.int32()))
        elif c == "row":
            fields.append(pa.field(c, pa.int64()))
        else:
            fields.append(pa.field(c, pa.string()))
    return pa.schema(fields)


def to_batch(rows: list[dict[str, Any]], columns: Sequence[str], dims: int) -> Any:
    """Records -> an Arrow record batch (embeddings as one float32 block, nulls masked)."""
    import numpy as np
    import pyarrow as pa

    schema = _schema(columns, dims)
    arrays = []
    for c in columns:
        if c == EMBEDDING:
            present = [r.get(c) is not None for r in rows]
            block = np.zeros((len(rows), dims), dtype=np.float32)
            for i, r in enumerate(rows):
                if present[i]:
                    block[i] = r[c]
            arrays.append(
                pa.FixedSizeListArray.from_arrays(
                    pa.array(block.reshape(-1)), dims, mask=pa.array([not p for p in present])
                )
            )
        else:
            arrays.append(pa.array([r.get(c) for r in rows], type=schema.field(c).type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _read_segment(path: Path) -> Iterator[Any]:
    """The complete batches of a segment (a killed writer leaves a torn last one)."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.OSFile(str(path), "rb"))
    except (pa.ArrowInvalid, OSError):
        return
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError):
            return


class EmbeddingStore:
    """Segments of one output file, and the final file they become.

    Args:
        output: the file to write (``.parquet``, or ``.npy`` + its index CSV).
        fmt: ``parquet`` or ``npy``.
        columns: the record columns, ``embedding`` among them.
        key: the column that names a row (``path``), for :meth:`done`.
    """

    def __init__(self, output: Path, fmt: str, columns: Sequence[str], key: str = "path"):
        from biotrove_cli.core.io import is_special_file, write_target

        self.output = write_target(output)  # a symlink: the file it points to
        if fmt == "npy" and is_special_file(self.output):
            # the .npy is written in place (a memory map) and renamed over the output, with its
            # index CSV beside it: neither can be a device or a FIFO (nor /dev/null replaced)
            raise UsageError(
                f"--format npy writes {Path(output).name} and its index CSV beside it: -o "
                f"must name a regular file, not {output}",
                hint="use --format parquet or jsonl to write into it",
            )
        self.fmt = fmt
        self.columns = list(columns)
        self.key = key
        self.parts = parts_dir(self.output)
        self._writer: Any = None
        self._sink: Any = None
        self.dims: int | None = None

    # -- resume -----------------------------------------------------------------------------
    def done(self) -> set[str]:
        """The keys the output and the segments already hold (``--resume``)."""
        seen: set[str] = set()
        for batch in self._earlier_batches():
            seen.update(str(v) for v in batch.column(self.key).to_pylist())
        return seen

    def _earlier_batches(self) -> Iterator[Any]:
        """What an earlier run wrote: the finished output's rows, then its segments' batches."""
        import pyarrow as pa

        if self.output.is_file():
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                try:
                    table = pq.read_table(self.output)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise InputError(
                        f"{self.output}: not a readable Parquet file ({exc}), cannot resume it",
                        hint="drop --resume to replace it, or write to another -o file",
                    ) from None
                self._check_columns(table.schema.names, self.output)
                yield from table.to_batches()
            else:
                yield from self._npy_batches()
        if self.parts.is_dir():
            for seg in sorted(self.parts.glob("segment-*.arrows")):
                yield from _read_segment(seg)

    def _check_columns(self, names: Sequence[str], where: Path) -> None:
        if list(names) != self.columns:
            raise InputError(
                f"{where}: its columns ({', '.join(names)}) are not this command's, cannot "
                "resume into it",
                hint="drop --resume to replace it, or write to another -o file",
            )

    def _npy_batches(self) -> Iterator[Any]:
        import numpy as np

        index = index_path(self.output)
        if not index.is_file():
            raise InputError(
                f"{self.output}: its index {index.name} is missing, cannot resume it",
                hint="drop --resume to replace the output",
            )
        array = np.load(self.output, mmap_mode="r")
        with open(index, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        dims = int(array.shape[1]) if array.ndim == 2 else 0
        out: list[dict[str, Any]] = []
        for r in rows:
            rec: dict[str, Any] = {c: (r.get(c) or None) for c in self.columns if c != EMBEDDING}
            rec["dims"] = int(r["dims"]) if r.get("dims") else dims
            rec[EMBEDDING] = np.asarray(array[int(r["row"])]) if r.get("row") else None
            out.append(rec)
        if out:
            yield to_batch(out, self.columns, dims)

    # -- writing ----------------------------------------------------------------------------
    def start(self, resume: bool) -> None:
        """Begin a new segment; without ``resume`` an earlier run's segments are dropped."""
        if not resume and self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)

    def append(self, rows: list[dict[str, Any]], dims: int) -> None:
        """Write a batch's rows to the current segment (flushed to disk)."""
        import pyarrow as pa

        if not rows:
            return
        batch = to_batch(rows, self.columns, dims)
        if self._writer is None:
            n = len(list(self.parts.glob("segment-*.arrows")))
            self._sink = pa.OSFile(str(self.parts / f"segment-{n:04d}.arrows"), "wb")
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self._sink.flush()
        self.dims = dims

    def close_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def finish(self, dims: int) -> int:
        """Combine everything, in order, into the output (written atomically; memory holds one
        row group at a time) and remove the segments; returns the number of rows."""
        self.close_segment()
        if self.fmt == "parquet":
            n = self._write_parquet(dims)
        else:
            n = self._write_npy(dims)
        shutil.rmtree(self.parts, ignore_errors=True)
        return n

    def _batches(self, dims: int) -> Iterator[Any]:
        schema = _schema(self.columns, dims)
        for b in self._earlier_batches():
            if b.num_rows:
                yield b.cast(schema)

    def _write_parquet(self, dims: int) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from biotrove_cli.core.io import atomic_open

        schema = _schema(self.columns, dims)
        n = 0
        pending: list[Any] = []
        with atomic_open(self.output, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
            for b in self._batches(dims):
                pending.append(b)
                if sum(x.num_rows for x in pending) >= ROW_GROUP:
                    writer.write_table(pa.Table.from_batches(pending, schema=schema))
                    n += sum(x.num_rows for x in pending)
                    pending = []
            # an empty output still has its schema
            writer.write_table(pa.Table.from_batches(pending, schema=schema))
            n += sum(x.num_rows for x in pending)
        return n

    def _write_npy(self, dims: int) -> int:
        """The embeddings into a memory-mapped .npy (flat memory), then the index CSV."""
        import numpy as np

        from biotrove_cli.core.io import atomic_open, fsync_dir

        n_vec = sum(b.num_rows - b.column(EMBEDDING).null_count for b in self._batches(dims))
        tmp = self.output.with_name(f".{self.output.name}.{os.getpid()}.tmp")
        if n_vec:
            array: Any = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(n_vec, dims)
            )
        else:  # a memory map cannot be empty
            with open(tmp, "wb") as raw:
                np.save(raw, np.zeros((0, dims), dtype=np.float32), allow_pickle=False)
            array = None
        other = [c for c in self.columns if c != EMBEDDING]
        row = n_rows = 0
        try:
            with atomic_open(index_path(self.output), "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["row", *other])
                for b in self._batches(dims):
                    emb = b.column(EMBEDDING)
                    valid = np.asarray(emb.is_valid().to_pylist(), dtype=bool)
                    # the child array holds a slot for every row, null ones included
                    values = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dims)
                    values = values[emb.offset : emb.offset + len(emb)][valid]
                    if array is not None and len(values):
                        array[row : row + len(values)] = values
                    cols = {c: b.column(c).to_pylist() for c in other}
                    n_rows += len(valid)
                    for i, ok in enumerate(valid):
                        cells = ["" if cols[c][i] is None else cols[c][i] for c in other]
                        writer.writerow([row if ok else "", *cells])
                        row += int(ok)
                if array is not None:
                    array.flush()
                    del array
                os.replace(tmp, self.output)
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_dir(self.output.parent)
        return n_rows
