"""Running ``biotrove eval``: in this process, or on N processes through torchrun.

With more than one process the config goes to a temporary JSON file and torchrun starts the
worker module on every rank; each rank runs :func:`run_worker` (joins the process group,
evaluates its share of the data) and rank 0 writes the result's payload beside the config, where
the launching process reads it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.engine import evaluate
from biotrove_cli.core.runtime import ProgressFn

#: The worker's own flags: where its config is, and where rank 0 writes the payload.
WORKER_CONFIG = "--worker-config"
WORKER_RESULT = "--worker-result"


def run_eval(
    cfg: EvalConfig,
    progress: ProgressFn | None = None,
    *,
    nproc: int = 1,
    worker: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate and return the payload to render (see ``EvalResult.payload``).

    Args:
        progress: the ``(done, total)`` callback of a single-process run (torchrun workers
            report their own).
        nproc: processes through torchrun; 1 runs in this process.
        worker: what torchrun starts on each rank: a module and its arguments (e.g.
            ``--quiet``), to which ``--worker-config FILE --worker-result FILE`` are added; it
            calls :func:`run_worker`.
    """
    if nproc > 1:
        if not worker:
            raise ValueError("run_eval: more than one process needs a worker module")
        return _run_distributed(cfg, nproc, worker)
    result = evaluate(cfg, progress)
    assert result is not None  # a single process is rank 0
    return result.payload()


def _run_distributed(cfg: EvalConfig, nproc: int, worker: Sequence[str]) -> dict[str, Any]:
    import tempfile

    from biotrove_cli.core.distributed.launch import LaunchConfig, LaunchError, launch
    from biotrove_cli.core.io import atomic_write_json, read_json

    with tempfile.TemporaryDirectory(prefix="biotrove-eval-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        result_path = Path(tmp) / "result.json"
        atomic_write_json(cfg_path, cfg.to_dict())
        module, *args = worker
        args += [WORKER_CONFIG, str(cfg_path), WORKER_RESULT, str(result_path)]
        try:
            launch(module, args, LaunchConfig(nproc_per_node=nproc))
        except LaunchError as exc:
            raise LaunchError(
                exc.message, hint="the failing rank's error is printed above; fix it and rerun"
            ) from None
        return read_json(result_path)


def run_worker(
    config_path: Path,
    result_path: Path,
    open_progress: Callable[[], contextlib.AbstractContextManager[ProgressFn]] | None = None,
) -> None:
    """One torchrun rank: join the group, evaluate its share; rank 0 writes the payload.

    Args:
        open_progress: opens the progress callback around the image passes (the caller's
            progress bar); None reports nothing.
    """
    from biotrove_cli.core.distributed.env import process_group
    from biotrove_cli.core.io import atomic_write_json, read_json
    from biotrove_cli.core.runtime import device_type

    cfg = EvalConfig.from_dict(read_json(config_path))
    with process_group(device_type(cfg.device)) as env:
        if device_type(cfg.device) == "cuda":
            import torch

            cfg.device = f"cuda:{env.local_rank}"
            torch.cuda.set_device(env.local_rank)
        with open_progress() if open_progress is not None else contextlib.nullcontext() as cb:
            result = evaluate(cfg, cb, rank=env.rank, world_size=env.world_size)
        if result is not None:
            atomic_write_json(result_path, result.payload())
