"""One trial of a search, inside Ray: the Tune trial function (a Ray Train driver) and the loop
of its Ray Train workers, which run biotrove's own Trainer (no torchrun).

The trial function builds a ``ray.train.torch.TorchTrainer``; Ray Train starts the workers and
their process group, which the Trainer uses as it is. On every rank a :class:`TuneReport`
callback calls ``ray.train.report`` at each validation (Ray needs every worker to report, the
same number of times); rank 0's report carries the metrics (``step``, ``epoch``,
``val/loss``, ``val/<rank>_top1``, ..., ``train/loss``) and a checkpoint that points into the
trial's run folder, which ``TuneReportCallback`` forwards to Tune.

A trial's run folder is ``SEARCH/runs/TRIAL_ID``, a normal biotrove run folder; a trial that is
restarted (``--resume``, a Ray Train retry) continues it from its latest checkpoint. Every
process of a trial checks that it sees the search folder: a search on several machines needs
it on a shared file system.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import BiotroveError, ConfigError, TrainingError
from biotrove_cli.core.layout import RUN_JSON, SEARCH_CONFIG, SEARCH_RUNS, SEARCH_TRAIN_STATE
from biotrove_cli.core.training.hooks import Callbacks
from biotrove_cli.core.training.trackers import tracker_metrics

#: the file in a reported Ray checkpoint: where the state of that report lives
POINTER = "biotrove_checkpoint.json"
#: the metric that tells the search which Ray placement group a trial's workers hold
PLACEMENT_GROUP = "placement_group"


def check_shared(search_dir: Path) -> None:
    """Fail when this node does not see the search folder (storage not shared).

    Raises:
        TrainingError: naming this machine and what to do.
    """
    if not (search_dir / SEARCH_CONFIG).is_file():
        raise TrainingError(
            f"{search_dir} is not visible on {socket.gethostname()}: a search on several "
            "machines needs --storage-path on a file system every node shares (NFS, Lustre, "
            "...), at the same path",
            hint="pass --storage-path /shared/path, mounted at the same path on every node",
        )


def trial_config(base: dict[str, Any], params: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The full config of one trial: the search's base, the trial's sampled values, its run
    folder (dotted keys nested)."""
    cfg = configlib.deep_merge(base, configlib.nest(dict(params)))
    cfg["run_dir"] = str(run_dir)
    return cfg


def build_config(data: dict[str, Any]) -> Any:
    """A TrainConfig from its dict, every problem at once."""
    from biotrove_cli.core.training.config import TrainConfig

    problems: list[str] = []
    cfg = configlib.build(TrainConfig, data, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def trial_driver(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """The Tune trial function: one Ray Train run of biotrove's Trainer on the trial's config.

    ``settings``: ``search_dir``, ``base`` (the search's config as a dict), ``workers``,
    ``cpus_per_worker``, ``gpus_per_worker`` (see :mod:`biotrove_cli.core.tune.search`).
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    search_dir = Path(settings["search_dir"])
    check_shared(search_dir)
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(settings["base"], config, search_dir / SEARCH_RUNS / trial_id)
    gpus = float(settings["gpus_per_worker"])
    resources = {"CPU": float(settings["cpus_per_worker"])}
    if gpus:
        resources["GPU"] = gpus
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg, "search_dir": str(search_dir)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(settings["workers"]), use_gpu=gpus > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            # the same name and storage on a restart: Ray Train continues its own state
            name=trial_id,
            storage_path=str(search_dir / SEARCH_TRAIN_STATE),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:
        found = find_biotrove_error(exc)
        if found is None:
            raise
        # the worker's own message, not Ray's wrapping of it, becomes the trial's error
        raise TrainingError(found.message, hint=found.hint) from None


def find_biotrove_error(exc: BaseException) -> BiotroveError | None:
    """The BiotroveError behind an exception Ray wrapped (its causes, or a worker's error)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, BiotroveError):
            return err
        todo += [err.__cause__, err.__context__, getattr(err, "cause", None)]
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    return None


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: biotrove's Trainer in the process group Ray set up, on the
    device Ray assigned, with intra-op threads from the CPUs Ray reserved for it (Ray sets
    ``OMP_NUM_THREADS=1`` in its workers)."""
    import ray
    import ray.train.torch

    from biotrove_cli.core.runtime import training_threads
    from biotrove_cli.core.training.trainer import train
    from biotrove_cli.core.training.validate import make_validator

    check_shared(Path(loop_config["search_dir"]))
    cfg = build_config(loop_config["config"])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    report = TuneReport()
    train(
        cfg,
        resume="auto",  # a restarted trial continues its run folder
        callbacks=[report],
        validator_factory=make_validator,
        device=str(ray.train.torch.get_device()),
        threads=training_threads(1, cfg.data.workers, cores=max(1, int(cpus))),
    )
    report.finish()


class TuneReport(Callbacks):
    """``ray.train.report`` at every validation, on every rank (Ray's rule); rank 0's report
    has the metrics and a checkpoint: a small folder naming the run folder's checkpoint of
    that step (the state itself stays in the run folder, which is on shared storage).

    The last report waits for :meth:`finish`, called once the Trainer has closed: Tune ends a
    trial as soon as it has its last result, and the run folder and trackers must be complete
    by then."""

    every_rank = True

    def __init__(self) -> None:
        self.train_loss: float | None = None
        self.checkpoint: Path | None = None
        self.run_dir = ""
        self.total_steps = 0
        self.reports = 0
        self.pending: dict[str, Any] | None = None
        self._placement_group: str | None = None

    def on_start(self, info: dict[str, Any]) -> None:
        import ray

        self.run_dir = info["run_dir"]
        self.total_steps = int(info["total_steps"])
        self._placement_group = ray.get_runtime_context().get_placement_group_id()

    def on_step(self, metrics: dict[str, Any]) -> None:
        self.train_loss = float(metrics["loss"])

    def on_checkpoint(self, path: Path) -> None:
        self.checkpoint = Path(path)

    def on_eval(self, record: dict[str, Any]) -> None:
        if record["step"] >= self.total_steps:
            self.pending = record
        else:
            self._report(record)

    def finish(self) -> None:
        """Send the last report (the run has ended and its Trainer closed)."""
        if self.pending is not None:
            self._report(self.pending)
            self.pending = None

    def _report(self, record: dict[str, Any]) -> None:
        import ray.train

        self.reports += 1
        metrics: dict[str, Any] = {"step": record["step"], "epoch": record["epoch"]}
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(metrics)
            return
        metrics.update(tracker_metrics(record))
        if self.train_loss is not None:
            metrics["train/loss"] = self.train_loss
        if self._placement_group:
            metrics[PLACEMENT_GROUP] = self._placement_group
        pointer = {"run_dir": self.run_dir, "step": record["step"]}
        if self.checkpoint is not None:
            pointer["checkpoint"] = str(self.checkpoint)
        with tempfile.TemporaryDirectory(prefix="biotrove-report-") as tmp:
            Path(tmp, POINTER).write_text(json.dumps(pointer))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def on_end(self, result: Any) -> None:
        """A trial restarted after its run had ended (the search was stopped before Tune saw
        its last reports) reports that run's last evaluation once, so Tune sees its end."""
        if self.reports or self.pending is not None:
            return
        from biotrove_cli.core.training.run import read_metrics

        evals = [m for m in read_metrics(Path(self.run_dir)) if m.get("kind") == "eval"]
        last = evals[-1] if evals else {}
        if last.get("step") != result.steps:
            last = {"kind": "eval"}  # no evaluation of the last step: report its position
        self.pending = {**last, "step": result.steps, "epoch": result.epochs_done}


def mark_stopped(run_dir: Path, reason: str) -> None:
    """A trial the scheduler stopped: its run.json says so, with the steps of its latest
    checkpoint (the trial cannot: it was ended mid-step)."""
    from biotrove_cli.core.layout import checkpoint_step
    from biotrove_cli.core.models.checkpoint import resolve_latest
    from biotrove_cli.core.training.run import read_run_json, write_run_json

    if (run_dir / RUN_JSON).is_file() and read_run_json(run_dir).get("status") == "running":
        latest = resolve_latest(run_dir)
        steps = checkpoint_step(latest.name) if latest else 0
        write_run_json(run_dir, status="stopped", stopped_by=reason, steps=steps)
