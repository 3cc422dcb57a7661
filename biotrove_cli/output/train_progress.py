"""Training progress on stderr: a Rich bar on a TTY, otherwise one log line every ``log_every``
steps (SLURM logs); the launch, the start, evaluations and checkpoints as narrative lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.training.hooks import Callbacks
from biotrove_cli.output import console, progress


class TrainReporter(Callbacks):
    """Rich progress on a TTY; otherwise one log line every ``log_every`` steps (SLURM logs).

    ``log_every`` defaults to the run's (``on_start`` brings it). Use it as a context manager:
    the bar is closed however training ends.
    """

    def __init__(self, log_every: int | None = None):
        self.log_every = max(1, log_every) if log_every else None
        self.live = progress.enabled()
        self._cm: Any = None
        self._update: Any = None
        self.total = 0

    def on_launch(self, info: dict[str, Any]) -> None:
        console.step(
            f"launching {info['nproc_per_node']} process(es) per node through torchrun "
            f"({info['backend']})"
        )

    def on_start(self, info: dict[str, Any]) -> None:
        self.total = info["total_steps"]
        if self.log_every is None:
            self.log_every = max(1, int(info.get("log_every") or 10))
        what = (
            f"resuming from {Path(info['resumed_from']).name} at step {info['start_step']}"
            if info.get("resumed_from")
            else "starting"
        )
        console.step(
            f"training {what}: {info['total_steps']} steps ({info['steps_per_epoch']}/epoch), "
            f"global batch {info['global_batch']}, {info['world_size']} process(es) on "
            f"{info['device']}, {info['precision']}, {info['num_samples']} samples/epoch from "
            f"{info['shards']} shard(s)"
        )
        console.info(f"run folder: {info['run_dir']}")
        if self.live:
            self._cm = progress.progress("train", total=self.total, unit="steps")
            self._update = self._cm.__enter__()
            self._update(info["start_step"], self.total)

    def on_step(self, m: dict[str, Any]) -> None:
        if self._update is not None:
            self._update(m["step"], self.total)
            self._update.postfix(
                f"loss {m['loss']:.3f}  lr {m['lr']:.2e}  {m['samples_per_s']:.0f} samples/s"
            )
        elif m["step"] % (self.log_every or 10) == 0 or m["step"] == self.total:
            console.info(
                f"step {m['step']}/{self.total}  loss {m['loss']:.4f}  "
                f"lr {m['lr']:.2e}  {m['samples_per_s']:.1f} samples/s"
            )

    def on_eval(self, m: dict[str, Any]) -> None:
        parts = [
            f"{k[5:]} {v:.3f}"
            for k, v in m.items()
            if k.startswith("top1_") and isinstance(v, float)
        ]
        console.info(f"zero-shot top-1 at step {m['step']}: " + ", ".join(parts))

    def on_checkpoint(self, path: Path) -> None:
        console.debug(f"checkpoint {path}")

    def on_end(self, result: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None
            self._update = None

    def __enter__(self) -> TrainReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
