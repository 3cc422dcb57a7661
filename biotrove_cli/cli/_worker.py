"""The process torchrun starts on each rank of a training run.

``python -m biotrove_cli.cli._worker --config RUN/launch.yaml [--resume latest|auto|PATH]``
Runs :func:`biotrove_cli.core.training.launch.run_worker` with a reporter that draws progress
on rank 0, and turns errors into ``Error:``/``Hint:`` lines and exit codes (one process trains
in the ``biotrove train`` process itself, through the CLI's own boundary).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biotrove_cli.output import console


def run_training(config_path: Path, resume: str | None, allow_config_change: bool) -> Any:
    """This rank's part of the run, with progress drawn on rank 0."""
    from biotrove_cli.core.training.launch import run_worker
    from biotrove_cli.output.train_progress import TrainReporter

    with TrainReporter() as reporter:
        return run_worker(
            config_path,
            resume=resume,
            allow_config_change=allow_config_change,
            callbacks=reporter,
        )


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
