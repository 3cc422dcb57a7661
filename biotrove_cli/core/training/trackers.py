"""Experiment trackers: TensorBoard, Weights & Biases and MLflow, each opt-in
(``tracking.report_to``, ``--report-to``) behind one small interface; ``metrics.jsonl`` is always
written besides them.

Rank 0 of a run opens them (the metrics log is rank 0's), logs every record the run logs under
one set of metric names (:func:`tracker_metrics`, the names ``biotrove tune`` reports too), and
closes them with the run's status. A resumed run continues the same wandb and MLflow runs: their
ids are kept in ``run.json`` under ``trackers``, with where each wrote (``biotrove info RUN``).

* ``tensorboard``: event files in ``RUN/tensorboard/`` (``pip install "biotrove[tensorboard]"``);
* ``wandb``: a run in ``RUN/wandb/``; ``WANDB_MODE=offline`` works without an account
  (``wandb sync`` uploads it later);
* ``mlflow``: ``tracking.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else a local file store in
  ``RUN/mlruns/`` (a ``biotrove tune`` search shares one in its folder).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import TrainingError, UsageError
from biotrove_cli.core.layout import MLFLOW_DIR, TENSORBOARD_DIR

log = logging.getLogger("biotrove")

TRACKERS = ("tensorboard", "wandb", "mlflow")
#: tracker -> (module to import, the extra that installs it)
_NEEDS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
_VAL_RENAMES = {"val_images": "images", "val_seconds": "seconds"}


def tracker_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a metrics.jsonl record under the names trackers and Tune use:
    ``train/loss``, ``train/lr``, ... for steps; ``val/loss``, ``val/<rank>_top1``,
    ``val/<rank>_top5``, ``val/images`` for evaluations."""
    kind = "val" if record.get("kind") == "eval" else "train"
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "epoch", "total_steps") or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            continue
        if kind == "val" and key.startswith(("top1_", "top5_")):
            name = f"{key[5:]}_{key[:4]}"  # top1_species -> species_top1
        else:
            name = _VAL_RENAMES.get(key, key) if kind == "val" else key
        out[f"{kind}/{name}"] = float(value)
    return out


def parse_report_to(names: list[str]) -> list[str]:
    """The trackers asked for, in order and once each; ``none`` clears the list.

    Raises:
        UsageError: an unknown tracker name.
    """
    out: list[str] = []
    for raw in names:
        for name in (n.strip().lower() for n in str(raw).split(",")):
            if not name:
                continue
            if name == "none":
                out = []
            elif name not in TRACKERS:
                raise UsageError(
                    f"unknown tracker {name!r}",
                    hint=f"use any of {', '.join(TRACKERS)} (comma list)",
                )
            elif name not in out:
                out.append(name)
    return out


def check_available(names: list[str]) -> None:
    """Fail before training when a tracker's package is not installed.

    Raises:
        UsageError: naming the extra that installs it.
    """
    missing = [n for n in names if not _installed(_NEEDS[n][0])]
    if missing:
        extras = ",".join(_NEEDS[n][1] for n in missing)
        raise UsageError(
            f"--report-to {','.join(missing)}: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed",
            hint=f'pip install "biotrove[{extras}]", or leave {", ".join(missing)} out of '
            "--report-to (metrics.jsonl is always written)",
        )


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module hidden as None in sys.modules, a broken one
        return False


class Tracker:
    """One experiment tracker of one run (rank 0)."""

    name = ""

    def __init__(self) -> None:
        #: where it wrote (a folder or URI) and what a resumed run needs to continue it
        self.info: dict[str, Any] = {}

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self, status: str) -> None:
        """Flush and end the run; ``status`` is run.json's (finished, failed, ...)."""


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, run_dir: Path, cfg: Any, previous: dict[str, Any]):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        where = run_dir.resolve() / TENSORBOARD_DIR
        # a resumed run drops the events logged after its checkpoint (they are logged again)
        start = previous.get("start_step") or 0
        self._writer = SummaryWriter(log_dir=str(where), purge_step=start + 1 if start else None)
        self.info = {"dir": str(where)}

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self, status: str) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, run_dir: Path, cfg: Any, previous: dict[str, Any]):
        super().__init__()
        import wandb

        from biotrove_cli.core import config as configlib

        run_dir = run_dir.resolve()
        try:
            self._run = wandb.init(
                project=cfg.tracking.project,
                group=cfg.tracking.group or None,
                name=run_dir.name,
                dir=str(run_dir),  # wandb writes into its own wandb/ folder there
                id=previous.get("id"),
                resume="allow" if previous.get("id") else None,
                config=configlib.flatten(configlib.to_dict(cfg)),
                # biotrove's progress is on stderr already; no copy of the console in wandb
                settings=wandb.Settings(console="off", quiet=True, silent=True),
            )
        except Exception as exc:  # wandb raises its own (UsageError, CommError, ...)
            raise TrainingError(
                f"wandb could not start a run: {exc}",
                hint="run `wandb login`, or set WANDB_MODE=offline to record the run locally "
                "(upload it later with `wandb sync`)",
            ) from exc
        self.info = {
            "id": self._run.id,
            "dir": str(Path(self._run.dir).parent),
            "mode": "offline" if self._run.offline else "online",
            "project": cfg.tracking.project,
        }
        if not self._run.offline and self._run.url:
            self.info["url"] = self._run.url

    def log(self, metrics: dict[str, float], step: int) -> None:
        # wandb's step must not go backwards; a record of an earlier step (an evaluation at the
        # step just trained) is attached to the current one
        self._run.log(metrics, step=max(step, self._run.step))

    def close(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, cfg: Any, previous: dict[str, Any]):
        super().__init__()
        from mlflow.tracking import MlflowClient

        from biotrove_cli.core import config as configlib

        uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not uri:
            uri = (run_dir / MLFLOW_DIR).resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store only behind this switch; it is what a local run
            # without a tracking server wants (no database to set up)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self._client = MlflowClient(uri)
            exp_id = self._experiment(cfg.tracking.project)
            if previous.get("run_id"):
                run_id = previous["run_id"]
                self._client.update_run(run_id, status="RUNNING")
            else:
                tags = {"biotrove.run_dir": str(run_dir)}
                if cfg.tracking.group:
                    tags["biotrove.group"] = cfg.tracking.group
                run_id = self._client.create_run(
                    exp_id, run_name=run_dir.name, tags=tags
                ).info.run_id
                params = configlib.flatten(configlib.to_dict(cfg))
                for key, value in params.items():
                    self._client.log_param(run_id, key, str(value)[:500])
        except Exception as exc:  # MlflowException, connection errors
            raise TrainingError(
                f"mlflow could not start a run at {uri}: {exc}",
                hint="check tracking.mlflow_uri / MLFLOW_TRACKING_URI, or leave mlflow out of "
                "--report-to",
            ) from exc
        self._run_id = run_id
        self.info = {"uri": uri, "experiment": cfg.tracking.project, "run_id": run_id}

    def _experiment(self, name: str) -> str:
        """The experiment's id, created if new (trials of a search may race to create it)."""
        exp = self._client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self._client.create_experiment(name)
            except Exception:
                exp = self._client.get_experiment_by_name(name)
                if exp is None:
                    raise
        return exp.experiment_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value in metrics.items()]
        self._client.log_batch(self._run_id, metrics=batch)

    def close(self, status: str) -> None:
        state = {"finished": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        self._client.set_terminated(self._run_id, status=state)


_CLASSES: dict[str, type] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MlflowTracker,
}


def open_trackers(
    run_dir: Path, cfg: Any, previous: dict[str, Any], start_step: int = 0
) -> list[Tracker]:
    """Open the trackers of ``cfg.tracking.report_to`` for rank 0 of a run; ``previous`` is
    run.json's ``trackers`` (a resumed run, from ``start_step``, continues the same wandb and
    MLflow runs). On an error, those already open are closed."""
    names = parse_report_to(list(cfg.tracking.report_to))
    check_available(names)
    opened: list[Tracker] = []
    try:
        for name in names:
            state = {**(previous.get(name) or {}), "start_step": start_step}
            opened.append(_CLASSES[name](run_dir, cfg, state))
    except BaseException:
        for tracker in opened:
            tracker.close("failed")
        raise
    return opened
