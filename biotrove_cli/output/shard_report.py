"""What ``biotrove shard`` shows: one progress bar per phase of the job, the closing report on
stderr, and the per-split table (or machine records) on stdout."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from biotrove_cli.core.fmt import plural
from biotrove_cli.output import console
from biotrove_cli.output.render import Format, emit

if TYPE_CHECKING:
    from biotrove_cli.core.data.shard import ShardResult

#: The table's columns, in order (machine formats keep every one).
COLUMNS = ["split", "shards", "pending", "species", "planned", "written", "failed",
           "failures", "converted", "mb"]  # fmt: skip


class Phases:
    """One progress bar per phase of the job (download, shard), each closed when the next opens."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._fn = None

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def start(self, name: str, total: int) -> None:
        from biotrove_cli.output.progress import progress

        self._stack.close()
        self._stack = contextlib.ExitStack()
        label = {"download": "Downloading", "shard": "Sharding"}.get(name, name)
        self._fn = self._stack.enter_context(progress(label, total=total, unit="images"))

    def update(self, done: int, total: int) -> None:
        if self._fn is not None:
            self._fn(done, total)


def report(result: ShardResult) -> None:
    """The bad samples, what was written and whether the dataset is complete (stderr)."""
    for f in result.failed_samples[:5]:
        # the detail says more where the source alone does not (ambiguous, unsupported)
        why = f.get("detail") if f["reason"] in ("ambiguous", "unsupported") else None
        why = why or f["source"]
        console.warn(f"{f['reason']}: {f['key']} ({why})")
    failed = sum(s.failed for s in result.splits)
    if failed:
        console.warn(
            f"{failed} bad or missing images were skipped (by reason in the table; each shard's "
            ".stats.json names them)"
        )
    done_now = f"{plural(result.written_units, 'shard')} written"
    if result.kept_units:
        done_now += f", {result.kept_units} kept from an earlier run"
    rate = f" at {result.images_per_second:.0f} images/s" if result.images_per_second else ""
    console.info(f"{done_now} in {result.seconds:.1f}s{rate}")
    if result.finalized:
        console.info(
            f"dataset complete: {result.out} (sizes.json, taxonomy.parquet, manifest.json)"
        )
    else:
        console.info(
            f"this part is done; {plural(result.pending_units, 'shard')} of other parts still "
            f"missing. When all parts are done: biotrove shard --finalize {result.out}"
        )


def report_finalized(out: object) -> None:
    """``biotrove shard --finalize DIR`` wrote the index files."""
    console.info(f"finalized {out}: sizes.json, taxonomy.parquet, manifest.json")


def emit_result(
    result: ShardResult, format: Format, output: str | None, summary_path: Path | None = None
) -> None:
    """The per-split records: a table on screen, every column in machine formats (stdout); the
    run's summary to ``summary_path`` (JSON)."""
    records = result.records()
    # on screen, leave out what says nothing here (machine formats keep every column)
    shown = [c for c in COLUMNS if c in ("split", "failed") or any(r.get(c) for r in records)]
    emit(
        records,
        format,
        output,
        title=f"biotrove shard: {result.out}",
        columns=COLUMNS,
        table_columns=shown,
        summary_path=summary_path,
        summary={
            "out": str(result.out),
            "fingerprint": result.fingerprint,
            "finalized": result.finalized,
            "selection": result.selection,
            "download": result.download,
        },
    )
