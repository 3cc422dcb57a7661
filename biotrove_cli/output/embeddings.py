"""The output of ``biotrove embed``: a line saying what runs, the rows written batch by batch
(Parquet and npy through the core's resumable store, JSONL streamed, JSON at the end), and the
summary on stderr and in ``--summary FILE``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from biotrove_cli.core.errors import UsageError
from biotrove_cli.core.fmt import plural
from biotrove_cli.output import console, progress
from biotrove_cli.output.render import RecordSink, write_summary

if TYPE_CHECKING:
    from biotrove_cli.core.evaluation.embed import EmbedJob, EmbedSummary


class EmbedFormat(str, Enum):
    auto = "auto"
    parquet = "parquet"
    npy = "npy"
    jsonl = "jsonl"
    json = "json"


_SUFFIX = {".parquet": "parquet", ".npy": "npy", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def resolve_embed_format(fmt: EmbedFormat | str, output: str | None) -> str:
    """``auto`` -> by ``-o``'s suffix (Parquet for any other), JSON lines when piped.

    Raises:
        UsageError: no ``-o`` and stdout is a terminal (rows of 512 numbers help nobody there),
            or a file format asked for stdout.
    """
    fmt = EmbedFormat(fmt)
    to_stdout = output is None or output == "-"
    if fmt is EmbedFormat.auto:
        if not to_stdout:
            suffix = Path(str(output)).suffix.lower()
            return "json" if suffix == ".json" else _SUFFIX.get(suffix, "parquet")
        if console.stdout_is_tty():
            raise UsageError(
                "embed writes embeddings to a file or a pipe, not to the terminal",
                hint="add -o embeddings.parquet (or pipe it: --format jsonl | ...)",
            )
        return "jsonl"
    if fmt in (EmbedFormat.parquet, EmbedFormat.npy) and to_stdout:
        raise UsageError(f"--format {fmt.value} writes a file", hint=f"add -o FILE.{fmt.value}")
    return fmt.value


def write_embeddings(job: EmbedJob, output: str | None, summary_path: str | None = None) -> None:
    """Run a prepared job, writing its rows to ``output`` (None or ``-``: stdout)."""
    cfg, s = job.cfg, job.summary
    what = "class texts" if cfg.text else "images"
    n = len(job.text_rows) if cfg.text else len(job.items)
    console.step(
        f"embedding {n} {what} with {cfg.model} ({s.model.get('arch')}, {cfg.device}, "
        f"{s.dims} dims{', ' + s.model['precision'] if 'precision' in s.model else ''})"
    )
    if s.n_skipped:
        console.info(f"resuming: {plural(s.n_skipped, 'image')} already in {output}")
    store = job.store()
    to_file = output is not None and output != "-"
    try:
        with progress.progress("embed", total=n, unit=what) as cb:
            if store is not None:
                store.start(cfg.resume)
                for rows in job.run(cb):
                    store.append(rows, job.dims)
                store.finish(job.dims)
            else:
                _stream(job, cb, output if to_file else None)
    except KeyboardInterrupt:
        if store is not None:
            store.close_segment()
        if to_file and cfg.output_format in ("parquet", "npy", "jsonl"):
            console.warn(f"interrupted; rerun the same command with --resume to finish {output}")
        raise
    except BaseException:
        if store is not None:
            store.close_segment()
        raise
    console.info(_summary(s, output if to_file else None))
    if summary_path is not None:
        write_summary(summary_path, s.as_dict())


def _stream(job: EmbedJob, cb: object, output: str | None) -> None:
    """JSON lines (flushed per batch) or a JSON array, on stdout or into a file."""
    cfg = job.cfg
    streamed = output is not None and cfg.output_format == "jsonl"
    if streamed and not cfg.resume and Path(output).is_file():  # type: ignore[arg-type]
        Path(output).unlink()  # type: ignore[arg-type]  # replaced; appended so it can resume
    with RecordSink(cfg.output_format, output, columns=job.columns, append=streamed) as sink:
        for rows in job.run(cb):  # type: ignore[arg-type]
            sink.write_many(rows)
            sink.sync()


def _summary(s: EmbedSummary, written: str | None) -> str:
    noun = "class text" if s.kind == "text" else "image"
    rate = ""
    if s.seconds > 0 and s.kind == "image":
        rate = f" ({(s.n_embedded + s.n_errors) / s.seconds:.1f} images/s)"
    errors = ""
    if s.n_errors:
        errors = (
            f"; {s.n_errors} unreadable ("
            + ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
            + ")"
        )
    return (
        f"embedded {plural(s.n_embedded, noun)} ({s.dims} dims) in {s.seconds:.1f} s{rate}{errors}"
        + (f"; {s.n_skipped} already done" if s.n_skipped else "")
        + (f"; wrote {written}" if written else "")
    )
