"""The one module torchrun starts on every rank, for training and for evaluation.

``python -m biotrove_cli.cli.workers train --config RUN/launch.yaml [--resume auto|latest|PATH]``
``python -m biotrove_cli.cli.workers eval --worker-config CFG.json --worker-result OUT.json``

Each worker runs its part of the job (:func:`biotrove_cli.core.training.launch.run_worker`,
:func:`biotrove_cli.core.evaluation.run.run_worker`) with progress drawn on rank 0, inside one
error boundary: ``Error:``/``Hint:`` lines and exit codes, as ``main()`` is for the CLI (one
process runs in the ``biotrove`` process itself, through the CLI's own boundary). A worker ends
with the process that launched it, even when that one is killed with SIGKILL
(:func:`biotrove_cli.core.processes.die_with_parent`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biotrove_cli.output import console

MODULE = "biotrove_cli.cli.workers"


def train_worker(config_path: Path, resume: str | None, allow_config_change: bool) -> Any:
    """This rank's part of a training run, with progress drawn on rank 0."""
    from biotrove_cli.core.training.launch import run_worker
    from biotrove_cli.output.train_progress import TrainReporter

    with TrainReporter() as reporter:
        return run_worker(
            config_path,
            resume=resume,
            allow_config_change=allow_config_change,
            callbacks=reporter,
        )


def eval_worker(config_path: Path, result_path: Path) -> None:
    """This rank's share of an evaluation; rank 0 writes the result file."""
    from biotrove_cli.core.evaluation.run import run_worker
    from biotrove_cli.output import progress

    open_progress = functools.partial(progress.progress, "eval", unit="images")
    run_worker(config_path, result_path, open_progress)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biotrove-worker")
    tasks = parser.add_subparsers(dest="task", required=True)
    for name in ("train", "eval"):
        sub = tasks.add_parser(name)
        sub.add_argument("--quiet", action="store_true")
        sub.add_argument("--verbose", type=int, default=0)
        if name == "train":
            sub.add_argument("--config", required=True, type=Path)
            sub.add_argument("--resume", default=None)
            sub.add_argument("--allow-config-change", action="store_true")
        else:
            sub.add_argument("--worker-config", required=True, type=Path)
            sub.add_argument("--worker-result", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        from biotrove_cli.core.processes import die_with_parent

        die_with_parent()  # torchrun put us in our own session: nothing else would stop us
    args = _parser().parse_args(argv)
    console.configure(quiet=args.quiet, verbose=args.verbose)
    if args.task == "train":
        return worker_boundary(
            lambda: train_worker(args.config, args.resume, args.allow_config_change)
        )
    return worker_boundary(lambda: eval_worker(args.worker_config, args.worker_result))


def worker_boundary(body: Callable[[], Any]) -> int:
    """The error boundary of a torchrun worker (as ``main()`` is for the CLI): a BiotroveError
    becomes ``Error:`` (prefixed with the rank off rank 0) and ``Hint:`` lines and its exit
    code; Ctrl-C exits 130; ``BIOTROVE_DEBUG=1`` re-raises for the traceback (the same test of
    the variable as the CLI's)."""
    from biotrove_cli.core.errors import BiotroveError, InterruptedByUser, PreemptedError

    rank = os.environ.get("RANK", "0")
    try:
        body()
        return 0
    except (PreemptedError, InterruptedByUser) as exc:
        if os.environ.get("TORCHELASTIC_RUN_ID") is None:
            raise  # one process: the CLI's boundary reports it
        # under torchrun the launcher reports the stop once; rank 0 adds the step
        if rank == "0":
            console.info(exc.message)
        return exc.exit_code
    except BiotroveError as exc:
        if console.debug_enabled():
            raise
        prefix = "" if rank == "0" else f"[rank {rank}] "
        console.error(prefix + exc.message, exc.hint if rank == "0" else None)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an ordinary OS error (no space left...) is the user's to fix
        from biotrove_cli.core.errors import from_os_error, os_error_in

        os_exc = os_error_in(exc)
        known = from_os_error(os_exc) if os_exc is not None else None
        if known is None or console.debug_enabled():
            raise
        prefix = "" if rank == "0" else f"[rank {rank}] "
        console.error(prefix + known.message, known.hint)
        return known.exit_code


if __name__ == "__main__":
    sys.exit(main())
