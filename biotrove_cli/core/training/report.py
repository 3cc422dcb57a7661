"""What a training run tells the world as it goes: the start facts and every step to the
callbacks (progress), and every ``log_every`` steps and every evaluation to ``metrics.jsonl``
and the experiment trackers of ``--report-to`` (rank 0 writes; see :mod:`.run`, :mod:`.trackers`).
"""

from __future__ import annotations

import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from biotrove_cli.core.training import run as runlib
from biotrove_cli.core.training.config import TrainConfig
from biotrove_cli.core.training.hooks import Callbacks


class RunReporter:
    """The step counters behind samples/s, the metrics log and the callbacks of one process."""

    def __init__(self, cfg: TrainConfig, callbacks: Callbacks):
        self.cfg = cfg
        self.callbacks = callbacks
        self.metrics_log: runlib.MetricsLog | None = None
        self.samples_since_log = 0
        self.t_log = time.time()

    def open_metrics_log(self, run_dir: Path, start_step: int, cleanup: ExitStack) -> None:
        """Rank 0: metrics.jsonl and the trackers of ``--report-to`` (continued when resuming),
        closed by ``cleanup``."""
        from biotrove_cli.core.training.trackers import open_trackers

        previous = runlib.read_run_json(run_dir).get("trackers") or {}
        trackers = open_trackers(run_dir, self.cfg, previous, start_step=start_step)
        self.metrics_log = cleanup.enter_context(closing(runlib.MetricsLog(run_dir, trackers)))
        if trackers:
            runlib.write_run_json(run_dir, trackers={t.name: t.info for t in trackers})

    def restart_clock(self) -> None:
        self.t_log, self.samples_since_log = time.time(), 0

    def count(self, samples: int) -> None:
        self.samples_since_log += samples

    def due(self, step: int, total_steps: int) -> bool:
        """Whether ``step`` is logged to metrics.jsonl (every ``log_every`` and the last)."""
        return step % self.cfg.log_every == 0 or step == total_steps

    def step(self, metrics: dict[str, Any], logged: dict[str, Any] | None) -> None:
        """One optimizer step to the callbacks; with ``logged`` (its extra fields), also to
        the metrics log, and the samples/s clock starts again."""
        now = time.time()
        metrics["samples_per_s"] = self.samples_since_log / max(now - self.t_log, 1e-9)
        self.callbacks.on_step(metrics)
        if logged is not None:
            self.log({**metrics, "time": runlib.now_iso(), **logged})
            self.t_log, self.samples_since_log = now, 0

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics_log is not None:
            self.metrics_log.write(record)

    def set_status(self, status: str) -> None:
        """How the run ended, for the trackers that record it."""
        if self.metrics_log is not None:
            self.metrics_log.status = status
