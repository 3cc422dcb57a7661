"""``biotrove tune``: a hyperparameter search on Ray Tune, each trial a Ray Train run of
biotrove's Trainer (:mod:`biotrove_cli.core.tune.trial`).

The plan is checked before Ray starts (the space, the metric, the resources); then Ray is
started on this machine (or joined, ``--address``), the search runs with ASHA (or FIFO), and
the trials' results come back as records with the best trial's config in ``best.yaml``.

* Time is counted in optimizer steps when the trials have a step budget (``--max-steps`` or
  ``max_steps`` in the config), else in epochs; ASHA's grace period is in the same unit, and
  trials validate (and so report and checkpoint) every grace period unless ``val_every`` says.
* A trial's driver needs no CPU (it only watches its workers); ``max_concurrent_trials``
  defaults to what the cluster's CPUs and GPUs can run at once, so no trial driver waits for
  workers that cannot start.
* Ctrl-C (or SIGTERM) stops every trial and saves the search's state; ``--resume`` continues
  it (``Tuner.restore(..., resume_errored=True)``); nothing of a local Ray survives the
  command (:mod:`biotrove_cli.core.tune.guard`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import BiotroveError, UsageError
from biotrove_cli.core.layout import MLFLOW_DIR, SEARCH_CONFIG, is_search_dir
from biotrove_cli.core.taxonomy.rank import RANKS
from biotrove_cli.core.tune.space import SearchSpace, parse_space

log = logging.getLogger("biotrove")

#: memory (bytes) a trial's driver reserves instead of a CPU: it only watches its workers, and
#: a CPU per driver would leave a 2-core machine one trial at a time
DRIVER_MEMORY = 256 * 2**20


def metric_names() -> list[str]:
    """What a search can optimise: the metrics every trial reports."""
    names = ["val/loss", "train/loss"]
    for rank in RANKS:
        names += [f"val/{rank.value}_top1", f"val/{rank.value}_top5"]
    return names


class RayMissingError(BiotroveError):
    """``biotrove tune`` without Ray installed."""


def require_ray() -> None:
    """Raises RayMissingError (with the install hint) when Ray Tune or Train is missing."""
    # Ray Train's current API (the default since Ray 2.5x): TuneReportCallback needs it
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    try:
        import ray.train  # noqa: F401
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise RayMissingError(
            f"biotrove tune needs Ray Tune and Ray Train, which are not installed ({exc})",
            hint='pip install "biotrove[tune]" (it installs ray[tune,train])',
        ) from exc


@dataclass
class SearchConfig:
    """A search: the base config (a TrainConfig), the space, and how to search it."""

    base: Any
    space: SearchSpace
    name: str
    storage_path: Path
    num_samples: int = 1
    scheduler: str = "asha"
    metric: str = "val/species_top1"
    mode: str = "max"
    max_concurrent: int | None = None
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_steps: int | None = None
    grace: int | None = None
    reduction_factor: int = 2
    address: str | None = None
    resume: bool = False
    time_attr: str = field(init=False, default="step")
    max_t: int = field(init=False, default=0)

    @property
    def search_dir(self) -> Path:
        return self.storage_path / self.name

    def check(self) -> None:
        """Settle the time budget and check what can be checked before Ray starts.

        Raises:
            UsageError: every problem found, at once.
        """
        problems = []
        if self.metric not in metric_names():
            problems.append(
                f"--metric {self.metric}: not a reported metric (use val/loss, train/loss, "
                "val/RANK_top1 or val/RANK_top5, e.g. val/species_top1)"
            )
        if not self.base.data.val:
            problems.append("--val-data is needed: trials report at each validation")
        if self.base.device.startswith("cuda") and not self.gpus_per_worker:
            problems.append("device=cuda: give the workers GPUs with --gpus-per-worker")
        steps = self.max_steps or self.base.max_steps
        self.time_attr = "step" if steps else "epoch"
        self.max_t = int(steps or self.base.epochs)
        if self.grace is None:
            self.grace = max(1, self.max_t // 8) if self.time_attr == "step" else 1
        if not 1 <= self.grace <= self.max_t:
            problems.append(
                f"the grace period ({self.grace} {self.time_attr}s) must be between 1 and the "
                f"length of a trial ({self.max_t} {self.time_attr}s)"
            )
        if problems:
            raise UsageError("; ".join(problems), hint="see `biotrove tune --help`")
        from biotrove_cli.core.training.trackers import check_available

        check_available(list(self.base.tracking.report_to))

    def trial_base(self) -> dict[str, Any]:
        """The config every trial starts from: the base with the trial length, a validation
        (so a report and a checkpoint) every grace period, and the search as tracker group."""
        cfg = configlib.to_dict(self.base)
        if self.time_attr == "step":
            cfg["max_steps"] = self.max_t
            cfg["val_every"] = cfg["val_every"] or self.grace
            cfg["save_every"] = cfg["val_every"]
        tracking = cfg["tracking"]
        tracking["group"] = tracking["group"] or self.name
        if "mlflow" in tracking["report_to"] and not tracking["mlflow_uri"]:
            # one MLflow store for the whole search: its trials side by side in one experiment
            default = (self.search_dir / MLFLOW_DIR).as_uri()
            tracking["mlflow_uri"] = os.environ.get("MLFLOW_TRACKING_URI") or default
        return cfg

    def settings(self) -> dict[str, Any]:
        """What every trial driver gets (``tune.with_parameters``)."""
        return {
            "search_dir": str(self.search_dir),
            "base": self.trial_base(),
            "workers": self.workers_per_trial,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": self.gpus_per_worker,
        }

    def to_dict(self) -> dict[str, Any]:
        """``search.yaml``: what ``--resume`` reads back."""
        keys = (
            "name num_samples scheduler metric mode max_concurrent workers_per_trial "
            "cpus_per_worker gpus_per_worker max_steps grace reduction_factor"
        ).split()
        return {
            "biotrove_version": __version__,
            **{k: getattr(self, k) for k in keys},
            "time_attr": self.time_attr,
            "max_t": self.max_t,
            "space": self.space.to_dict(),
            "base": configlib.to_dict(self.base),
        }


def load_search(search_dir: Path, address: str | None = None) -> SearchConfig:
    """The search saved in ``search_dir`` (for ``--resume``).

    Raises:
        InputError: no search there.
    """
    from biotrove_cli.core.errors import InputError
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.tune.trial import build_config

    if not is_search_dir(search_dir):
        raise InputError(
            f"{search_dir}: no search to resume (no {SEARCH_CONFIG})",
            hint="give the --name (and --storage-path) of an earlier `biotrove tune`",
        )
    data = configlib.load_yaml(search_dir / SEARCH_CONFIG)
    base = build_config(data["base"])
    assert isinstance(base, TrainConfig)
    scfg = SearchConfig(
        base=base,
        space=parse_space(data["space"], base, source=str(search_dir / SEARCH_CONFIG)),
        storage_path=search_dir.parent,
        address=address,
        resume=True,
        **{k: data[k] for k in ("name", "num_samples", "scheduler", "metric", "mode")},
        **{
            k: data[k]
            for k in (
                "max_concurrent workers_per_trial cpus_per_worker gpus_per_worker max_steps "
                "grace reduction_factor"
            ).split()
        },
    )
    scfg.check()
    return scfg


def run_search(scfg: SearchConfig, events: Any = None, verbose: bool = False) -> Any:
    """Run (or continue) a search; ``events`` gets the trials' progress (a SearchEvents).
    Returns its :class:`~biotrove_cli.core.tune.results.SearchResult`.

    Raises:
        RayMissingError / UsageError / InputError / OutputExistsError: before Ray starts.
    """
    require_ray()
    scfg.check()
    _prepare_folder(scfg)
    from biotrove_cli.core.tune import monitor
    from biotrove_cli.core.tune.guard import Guard
    from biotrove_cli.core.tune.results import collect

    monitor.activate(events)
    # Tune's console reports would go to stdout, which carries only the trials table; the
    # progress is the events' (on stderr), and whatever Ray still prints goes there too
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    with ExitStack() as stack:
        stack.enter_context(redirect_stdout(sys.stderr))
        if not scfg.address:
            stack.enter_context(Guard())
        _start_ray(scfg, verbose)
        stack.callback(_stop_ray)
        stack.callback(monitor.release_all)
        _check_resources(scfg)
        tuner = _tuner(scfg)
        with _sigterm_stops_the_search():
            tuner.fit()
        return collect(scfg)


def _prepare_folder(scfg: SearchConfig) -> None:
    from biotrove_cli.core.errors import OutputExistsError
    from biotrove_cli.core.io import atomic_write_text

    folder = scfg.search_dir
    if scfg.resume:
        return  # load_search found it
    if folder.exists() and any(folder.iterdir()):
        raise OutputExistsError(
            f"{folder} already holds a search",
            hint="continue it with --resume, or choose another --name",
        )
    header = (
        f"biotrove tune search {scfg.name}; continue it with: biotrove tune --resume "
        f"--name {scfg.name} --storage-path {scfg.storage_path}"
    )
    text = "".join(f"# {ln}\n" for ln in header.splitlines())
    import yaml

    text += yaml.safe_dump(scfg.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(folder / SEARCH_CONFIG, text)


def _start_ray(scfg: SearchConfig, verbose: bool) -> None:
    """Start a local Ray (all of this machine's cores) or join ``--address``. Its processes
    start with SIGINT ignored: Ctrl-C reaches this process, which stops the search."""
    import ray

    options: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
        "include_dashboard": False,
    }
    with _sigint_ignored():
        try:
            if scfg.address:
                # the joined cluster's processes do not have this process's environment
                env = {"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}}
                ray.init(address=scfg.address, runtime_env=env, **options)
            else:
                ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(
                f"cannot start or reach Ray ({exc})",
                hint="check --address (ray status on the head node shows it)"
                if scfg.address
                else "check that Ray works here: python -c 'import ray; ray.init()'",
            ) from exc


def _stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextmanager
def _sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigterm_stops_the_search():
    """SIGTERM (a scheduler's end of job) stops the search as Ctrl-C does: Tune saves its
    state and stops the trials, so ``--resume`` continues it."""
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_resources(scfg: SearchConfig) -> None:
    """A trial must fit the cluster; concurrent trials default to what fits at once."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    need_cpu = scfg.workers_per_trial * scfg.cpus_per_worker
    need_gpu = scfg.workers_per_trial * scfg.gpus_per_worker
    if need_cpu > cpus or need_gpu > gpus:
        raise UsageError(
            f"a trial needs {need_cpu:g} CPUs and {need_gpu:g} GPUs "
            f"({scfg.workers_per_trial} workers), the Ray cluster has {cpus:g} CPUs and "
            f"{gpus:g} GPUs",
            hint="lower --workers-per-trial, --cpus-per-worker or --gpus-per-worker",
        )
    fits = int(cpus // need_cpu) if need_cpu else 1_000_000
    if need_gpu:
        fits = min(fits, int(gpus // need_gpu))
    if scfg.max_concurrent is None:
        scfg.max_concurrent = max(1, fits)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _tuner(scfg: SearchConfig) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from biotrove_cli.core.tune.monitor import SearchMonitor
    from biotrove_cli.core.tune.trial import trial_driver

    trainable = tune.with_resources(
        tune.with_parameters(trial_driver, settings=scfg.settings()),
        {"cpu": 0, "memory": DRIVER_MEMORY},
    )
    if scfg.resume:
        return tune.Tuner.restore(str(scfg.search_dir), trainable, resume_errored=True)
    if scfg.scheduler == "asha":
        scheduler: Any = ASHAScheduler(
            time_attr=scfg.time_attr,
            max_t=scfg.max_t,
            grace_period=scfg.grace,
            reduction_factor=scfg.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=scfg.space.to_ray(),
        tune_config=tune.TuneConfig(
            metric=scfg.metric,
            mode=scfg.mode,
            scheduler=scheduler,
            num_samples=scfg.num_samples,
            max_concurrent_trials=scfg.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=scfg.name,
            storage_path=str(scfg.storage_path),
            verbose=0,
            callbacks=[SearchMonitor(str(scfg.search_dir), scfg.time_attr, scfg.max_t)],
        ),
    )
