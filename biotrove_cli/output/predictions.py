"""The output of ``biotrove classify``: a line saying what runs, the predictions written batch by
batch (CSV and JSONL are flushed as they come, so an interrupted run can be resumed), and the
summary on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from biotrove_cli.core.evaluation.classify_records import COLUMNS, STREAM_FORMATS, TABLE_COLUMNS
from biotrove_cli.core.fmt import plural
from biotrove_cli.output import console, progress
from biotrove_cli.output.render import Format, RecordSink

if TYPE_CHECKING:
    from biotrove_cli.core.evaluation.classify import ClassifyJob, ClassifySummary


def _runtime(model: dict, device: str) -> str:
    """``cpu`` / ``cuda:0``; ``onnxruntime cpu`` for an ONNX bundle."""
    backend = model.get("backend")
    return f"{backend} {device}" if backend else str(device)


def write_predictions(
    job: ClassifyJob, fmt: Format, output: str | None, summary_path: str | None = None
) -> None:
    """Run a prepared job, writing its records to ``output`` (None or ``-``: stdout) and its
    summary to stderr and ``summary_path`` (JSON)."""
    cfg, s = job.cfg, job.summary
    to_file = output is not None and output != "-"
    streamed = to_file and fmt.value in STREAM_FORMATS
    level, kind = ("label", "labels") if job.clf.is_custom else (cfg.rank.value, "species")
    console.step(
        f"classifying {plural(len(job.files), 'image')} at {level} level over {s.n_labels} {kind} "
        f"({s.model.get('arch')}, {_runtime(s.model, cfg.device)}, {s.model.get('precision')}, "
        "class texts "
        f"{'from the cache' if s.text_cached else 'encoded'})"
    )
    if s.n_skipped:
        console.info(f"resuming: {plural(s.n_skipped, 'image')} already in {output}")
    sink = RecordSink(
        fmt,
        output,
        columns=COLUMNS,
        append=streamed,
        title=f"{level} predictions ({cfg.model})",
        summary_path=summary_path,
        # the rank varies per image only with --min-confidence
        table_columns=(
            ("path", "rank", *TABLE_COLUMNS[1:])
            if cfg.min_confidence is not None
            else TABLE_COLUMNS
        ),
    )
    console.debug(
        "model: " + ", ".join(f"{k} {v}" for k, v in s.model.items() if v not in (None, ""))
    )
    console.debug(f"labels: {s.labels or cfg.labels}; class texts {s.text}")
    console.debug(f"{len(job.files)} images, batches of {cfg.batch_size}")
    try:
        # the table is printed when the sink closes: the progress display must be gone by then
        # (else the title lands on the bar's line and the bar is redrawn under the table)
        with sink:
            with progress.progress("classify", total=len(job.files), unit="images") as cb:
                for records in job.run(cb):
                    sink.write_many(records)
                    sink.sync()
            sink.summary = s.as_dict()
    except KeyboardInterrupt:
        if streamed:
            console.warn(f"interrupted; rerun the same command with --resume to finish {output}")
        raise
    console.debug(f"image pass: {s.seconds:.2f} s")
    console.info(_summary(s, output if to_file else None))


def _summary(s: ClassifySummary, written: str | None) -> str:
    rate = f" ({s.images_per_s:.1f} images/s)" if s.images_per_s else ""
    errors = ""
    if s.n_errors:
        errors = (
            f"; {s.n_errors} unreadable ("
            + ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
            + ")"
        )
    return (
        f"classified {plural(s.n_classified, 'image')} in {s.seconds:.1f} s{rate}{errors}"
        + (f"; {s.n_skipped} already done" if s.n_skipped else "")
        + (f"; wrote {written}" if written else "")
    )
