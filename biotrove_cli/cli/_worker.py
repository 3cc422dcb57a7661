"""The process torchrun starts on each rank (and the in-process path for one process).

``python -m biotrove_cli.cli._worker --config RUN/launch.yaml [--resume latest|auto|PATH]``
Reads the resolved config, runs :func:`biotrove_cli.core.training.loop.train` with a reporter
that draws progress on rank 0, and turns errors into ``Error:``/``Hint:`` lines and exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biotrove_cli.output import console


class TrainReporter:
    """Rich progress on a TTY; otherwise one log line every ``log_every`` steps (SLURM logs)."""

    def __init__(self, log_every: int = 10):
        from biotrove_cli.output import progress

        self.log_every = max(1, log_every)
        self.live = progress.enabled()
        self._cm: Any = None
        self._update: Any = None
        self.total = 0
        self.t0 = time.time()

    def on_start(self, info: dict[str, Any]) -> None:
        from biotrove_cli.output import progress

        self.total = info["total_steps"]
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
        elif m["step"] % self.log_every == 0 or m["step"] == self.total:
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


def run_training(config_path: Path, resume: str | None, allow_config_change: bool) -> Any:
    """Load the resolved config and train (this process's part of the run)."""
    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.training.loop import train
    from biotrove_cli.core.training.validate import make_validator

    cfg = configlib.resolve(TrainConfig, config_file=config_path)
    reporter = TrainReporter(cfg.log_every)
    try:
        return train(
            cfg,
            resume=resume,
            allow_config_change=allow_config_change,
            callbacks=reporter,
            validator_factory=make_validator,
        )
    finally:
        reporter.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="biotrove-worker")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--allow-config-change", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    console.configure(quiet=args.quiet, verbose=args.verbose)
    return worker_boundary(lambda: run_training(args.config, args.resume, args.allow_config_change))


def worker_boundary(body: Callable[[], Any]) -> int:
    """The error boundary of a torchrun worker (as ``main()`` is for the CLI): a BiotroveError
    becomes ``Error:`` (prefixed with the rank off rank 0) and ``Hint:`` lines and its exit
    code; Ctrl-C exits 130; ``BIOTROVE_DEBUG=1`` re-raises for the traceback."""
    from biotrove_cli.core.errors import BiotroveError, PreemptedError

    rank = os.environ.get("RANK", "0")
    try:
        body()
        return 0
    except PreemptedError as exc:
        if os.environ.get("TORCHELASTIC_RUN_ID") is None:
            raise  # one process: the CLI's boundary reports it
        # under torchrun the launcher reports the preemption once; rank 0 adds the step
        if rank == "0":
            console.info(exc.message)
        return exc.exit_code
    except BiotroveError as exc:
        if os.environ.get("BIOTROVE_DEBUG"):
            raise
        prefix = "" if rank == "0" else f"[rank {rank}] "
        console.error(prefix + exc.message, exc.hint if rank == "0" else None)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
