"""The Trainer: one process of a (possibly distributed) CLIP training run.

Run directly for one process, by torchrun workers (``biotrove_cli.cli.workers``), or inside a
process group someone else set up (Ray Train's workers): that group is used and left up at the
end, while the one torchrun describes is joined and destroyed here. Only rank 0 writes files and
reports (progress, metrics.jsonl, the experiment trackers; a callback may ask to be called on
every rank, as Ray Train's report must be); every rank takes the same decisions (skip a step,
stop, save) by reducing flags across the process group, so no rank is left waiting in a
collective.

Reliability:
* checkpoints every ``save_every`` steps and at epoch ends, atomically, keeping the last K; they
  carry model, optimizer, scaler, step, epoch, batch position, RNG states and the config;
* ``resume="latest"`` skips truncated files; changing the schedule on resume is refused unless
  ``allow_config_change``; under torchrun restarts the workers resume by themselves;
* SIGTERM/SIGUSR1 (SLURM preemption): save, then raise PreemptedError (exit 75 -> requeue);
  Ctrl-C (SIGINT): save, then raise InterruptedByUser (exit 130); run.json records how the run
  ended (finished, preempted, interrupted, failed), and rerunning the command continues it;
* a non-finite loss skips the step; ``max_nonfinite`` in a row stops with an error, keeping the
  last good checkpoint;
* a shard that cannot be read (after retries) or ends early is warned about and counted
  (``metrics.jsonl``, the summary, the checkpoint), or stops the run under ``data.strict``.

The shape is torchtune's recipe: setup pieces and the loss step are short methods with the state
in attributes, and :meth:`Trainer.run` is only the loop::

    with Trainer(cfg, callbacks=...) as trainer:
        trainer.setup()
        result = trainer.run()

(One job, so one module of a little under 600 lines, most of them docstrings; the pieces it
calls live in model, optim, state, plan, signals and run.)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from biotrove_cli.core import config as configlib
from biotrove_cli.core.distributed.env import any_rank, barrier, dist_env, process_group
from biotrove_cli.core.errors import (
    BiotroveError,
    InterruptedByUser,
    PreemptedError,
    TrainingError,
)
from biotrove_cli.core.layout import CHECKPOINT_DIR, checkpoint_name
from biotrove_cli.core.runtime import (
    device_type,
    is_cuda,
    resolve_device,
    resolve_precision,
    timed,
    training_threads,
)
from biotrove_cli.core.training import run as runlib
from biotrove_cli.core.training.config import TrainConfig
from biotrove_cli.core.training.hooks import CallbackList, Callbacks, TrainResult, Validator
from biotrove_cli.core.training.loss_step import LossStep
from biotrove_cli.core.training.model import (
    autocast_for,
    build_training_model,
    parallelize,
    unwrap,
)
from biotrove_cli.core.training.plan import resolve_data, stream_plan
from biotrove_cli.core.training.problems import DataTally, all_ranks, note_problems
from biotrove_cli.core.training.report import RunReporter
from biotrove_cli.core.training.signals import StopSignals
from biotrove_cli.core.training.state import (
    find_resume_checkpoint,
    load_training_state,
    refuse_to_overwrite,
    save_training_checkpoint,
    set_rng_state,
    warn_on_layout_change,
)

log = logging.getLogger("biotrove")


class Trainer(LossStep):
    """One process's part of a training run: :meth:`setup`, then :meth:`run`, then
    :meth:`close` (or use it as a context manager). Every rank does the same."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        resume: str | None = None,
        allow_config_change: bool = False,
        callbacks: Callbacks | Sequence[Callbacks] | None = None,
        validator_factory: Callable[..., Validator | None] | None = None,
        device: str | None = None,
        threads: int | None = None,
    ):
        """
        Args:
            cfg: the resolved training config.
            resume: ``latest``, ``auto`` (latest if any) or a checkpoint path.
            allow_config_change: resume even when the schedule changed.
            callbacks: progress hooks, called on rank 0 (and on every rank for those that
                set ``every_rank``).
            validator_factory: ``(cfg, device) -> validate(model, step)`` for ``data.val``.
            device: this process's device, when the caller assigns it (a Ray Train worker's
                ``ray.train.torch.get_device()``); default ``cfg.device`` and the local rank.
            threads: intra-op CPU threads, when the caller knows its share of the cores (a Ray
                trial's CPUs); default this node's cores shared by its training processes.
        """
        self.cfg = cfg
        self.resume_spec = resume
        self.allow_config_change = allow_config_change
        self.callbacks = CallbackList(callbacks)
        self.validator_factory = validator_factory
        self._device = device
        self._threads = threads
        self.run_dir = Path(cfg.run_dir)
        self.cfg_dict = configlib.to_dict(cfg)
        self.t_start = time.time()
        self.signals = StopSignals()
        self._cleanup = ExitStack()  # what close() undoes, in reverse order of setup
        self.validator: Validator | None = None
        self.validating = False  # data.val is scored (by rank 0) at every validation point
        self.checkpoint_path: Path | None = None
        # the position in the run (what a checkpoint saves), and the result so far
        self.global_step = self.epoch = self.batch_in_epoch = 0
        self.result = TrainResult(run_dir=self.run_dir)
        self.lr = 0.0
        self.accum_count = self.nonfinite_run = 0
        self.reporter = RunReporter(cfg, self.callbacks)
        # shards this rank found unreadable or short (rank 0 also holds a resumed run's count)
        self.data_tally = DataTally()

    # -- setup -----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Every setup piece, in an order that checks all inputs before anything is written
        (with ``-v``, each one's time and the decisions taken)."""
        for piece in (
            self.setup_process_group,
            self.setup_data,
            self.find_checkpoint,
            self.setup_validation,
            self.setup_model,
            self.setup_plan,
            self.setup_optim,
            self.resume,
            self.setup_parallel,
            self.setup_run_folder,
        ):
            with timed(f"train setup: {piece.__name__.removeprefix('setup_')}"):
                piece()
        log.debug(
            "train: run folder %s, %s, data %s (%d shards, %d data workers per process)",
            self.run_dir.absolute(),
            f"resuming from {self.checkpoint_path}" if self.checkpoint_path else "a fresh start",
            self.cfg.data.train,
            len(self.shards),
            self.plan.workers,
        )

    def setup_process_group(self) -> None:
        """This process's device, place in the process group, CPU threads and precision."""
        import torch

        local = dist_env()  # before the group is joined: the local rank picks the GPU
        self.device: str = self._device or resolve_device(
            self.cfg.device, local_rank=local.local_rank, option="device"
        )
        self.env = self._cleanup.enter_context(process_group(device_type(self.device)))
        self.is_main = self.env.is_main
        self.callbacks = self.callbacks.for_rank(self.is_main)
        self.reporter.callbacks = self.callbacks
        if is_cuda(self.device):
            torch.cuda.set_device(self.device)
        else:
            torch.set_num_threads(
                self._threads or training_threads(self.env.local_world_size, self.cfg.data.workers)
            )
        self.precision = resolve_precision(self.cfg.precision, self.device, training=True)
        if self.env.restart_count > 0 and self.resume_spec is None:
            self.resume_spec = "auto"  # torchrun restarted us after a failure: continue the run

    def setup_data(self) -> None:
        """The training shards, samples per epoch and label bank; captions checked."""
        from biotrove_cli.core.training.data import validate_captions

        self.shards, self.num_samples, self.bank = resolve_data(self.cfg)
        validate_captions(self.shards, self.cfg.data.text_type)

    def find_checkpoint(self) -> None:
        """The checkpoint to resume from; a fresh start refuses a run that has checkpoints."""
        self.checkpoint_path = find_resume_checkpoint(self.run_dir, self.resume_spec)
        if self.checkpoint_path is None and self.is_main:
            refuse_to_overwrite(self.run_dir)

    def setup_validation(self) -> None:
        """The periodic zero-shot evaluation (rank 0): its data is checked before training."""
        self.validating = bool(self.validator_factory and self.cfg.data.val)
        if self.validating and self.is_main:
            self.validator = self.validator_factory(self.cfg, self.device)

    def setup_model(self) -> None:
        """Seeded initial weights, the train transform and the tokenizer."""
        import torch

        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.model, self.transform, self.tokenizer = build_training_model(
            self.cfg, self.device, self.precision
        )

    def setup_plan(self) -> None:
        """This rank's data streams and the run's step counts (refused when they cannot work)."""
        from biotrove_cli.core.training.model import image_size

        self.plan, self.schedule = stream_plan(
            self.cfg,
            self.shards,
            self.num_samples,
            world_size=self.env.world_size,
            rank=self.env.rank,
            image_size=image_size(self.model),
        )
        self.total_steps = self.schedule.total_steps

    def setup_optim(self) -> None:
        """AdamW, the gradient scaler (float16 on CUDA) and the learning-rate schedule."""
        from biotrove_cli.core.training.optim import make_optimizer, make_scaler, make_scheduler

        self.optimizer = make_optimizer(self.cfg, self.model, self.precision)
        self.scaler = make_scaler(self.precision, self.device)
        self.scheduler = make_scheduler(self.cfg, self.optimizer, max(self.total_steps, 1))

    def resume(self) -> None:
        """Continue from the checkpoint found: weights, optimizer, scaler, position, RNGs."""
        if self.checkpoint_path is None:
            return
        state = load_training_state(self.checkpoint_path, self.cfg_dict, self.allow_config_change)
        unwrap(self.model).load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        if self.is_main:  # the all-rank count so far; the other ranks add theirs from now on
            self.data_tally = DataTally.from_values((state.get("data") or {}).get("shards"))
        warn_on_layout_change(state, self.plan.workers, self.env.world_size)
        if self.batch_in_epoch >= self.plan.batches_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if "rng" in state:
            set_rng_state(state["rng"])
        self.result.resumed_from = self.checkpoint_path

    def setup_parallel(self) -> None:
        """DDP across ranks, torch.compile, the contrastive loss and the autocast."""
        import open_clip

        self.train_model = parallelize(self.model, self.cfg, self.device, self.env.world_size)
        self.loss_fn = open_clip.ClipLoss(
            local_loss=self.cfg.local_loss,
            gather_with_grad=self.cfg.gather_with_grad,
            cache_labels=True,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        self.autocast = autocast_for(self.precision, self.device)

    def setup_run_folder(self) -> None:
        """Rank 0 writes config, label bank and run.json and opens the metrics log and the
        experiment trackers; when that fails, every rank stops."""
        error: BiotroveError | None = None
        if self.is_main:
            try:
                runlib.start_run_folder(
                    self.run_dir,
                    self.cfg,
                    self.bank,
                    world_size=self.env.world_size,
                    device=self.device,
                    precision=self.precision,
                    resumed_from=self.result.resumed_from,
                )
                self.reporter.open_metrics_log(self.run_dir, self.global_step, self._cleanup)
            except BiotroveError as exc:
                error = exc
        if any_rank(error is not None, self.device):
            raise error or TrainingError("rank 0 could not set up the run folder (see its error)")
        self.callbacks.on_start(self._start_info())

    def _start_info(self) -> dict[str, Any]:
        world, cfg = self.env.world_size, self.cfg
        return {
            "run_dir": str(self.run_dir),
            "total_steps": self.total_steps,
            "start_step": self.global_step,
            "steps_per_epoch": self.schedule.steps_per_epoch,
            "world_size": world,
            "device": self.device,
            "precision": self.precision,
            "num_samples": self.num_samples,
            "shards": len(self.shards),
            "resumed_from": str(self.result.resumed_from) if self.result.resumed_from else None,
            "global_batch": cfg.data.batch_size * world * cfg.optim.accum,
            "log_every": cfg.log_every,
        }

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """The loop: epochs of batches until the last step; run.json records how it ended."""
        self.signals.install()
        self._cleanup.callback(self.signals.restore)
        self.reporter.restart_clock()
        try:
            done = self.global_step >= self.total_steps
            if done and any_rank(self._last_evaluation_missing(), self.device):
                self.validate()  # stopped between its last checkpoint and its last evaluation
            self.model.train()
            while not done and self.epoch < self.schedule.num_epochs:
                done = self.train_epoch()
                if self.batch_in_epoch >= self.plan.batches_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self.save_checkpoint()
                # val_every=0: evaluate at every epoch end; otherwise every val_every steps
                # (after that step's checkpoint), and at the end after the last checkpoint
                if not self.cfg.val_every or done:
                    self.validate()
            return self._finish()
        except PreemptedError:
            self._write_status("preempted")
            raise
        except (InterruptedByUser, KeyboardInterrupt):
            self._write_status("interrupted")
            raise
        except Exception:  # a TrainingError, a full disk...: run.json must not say running
            self._write_status("failed")
            raise

    def train_epoch(self) -> bool:
        """This epoch's batches from the current position; True once the last step is done."""
        from biotrove_cli.core.training.data import make_loader

        loader = make_loader(
            self.plan, self.epoch, self.batch_in_epoch, self.transform, self.tokenizer
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.accum_count = 0
        for batch in loader:
            self.batch_in_epoch = batch["batch"] + 1
            self.result.bad_samples += batch.get("bad", 0)
            self._stop_if_signalled(batch["batch"])
            note_problems(batch, self.data_tally, self.cfg.data.strict, self.device)
            if any_rank(not batch["valid"], self.device):
                self.result.skipped_nonfinite += 1  # no decodable image in this batch on some rank
                continue
            loss = self.step(batch)
            if loss is None:
                continue
            self._after_step(loss, batch.get("text_type"))
            if self.global_step >= self.total_steps:
                return True
        return False

    def _after_step(self, loss: float, text_type: str | None) -> None:
        """Tally and report an optimizer step; save and validate when they are due."""
        if self.result.first_loss is None:
            self.result.first_loss = loss
        self.result.last_loss = loss
        due = self.reporter.due(self.global_step, self.total_steps)
        totals = all_ranks(self.data_tally, self.device) if due else None
        self._report_step(loss, text_type, totals)
        step, cfg = self.global_step, self.cfg
        # the last step's checkpoint and evaluation come from run(), in that order
        if step >= self.total_steps:
            return
        if cfg.save_every and step % cfg.save_every == 0:
            self.save_checkpoint()
        if cfg.val_every and step % cfg.val_every == 0:
            self.validate()

    def _report_step(
        self, loss: float, text_type: str | None, data_totals: dict[str, int] | None = None
    ) -> None:
        """The step to the callbacks; every ``log_every`` steps (when ``data_totals`` were
        summed over the ranks), to metrics.jsonl (rank 0)."""
        import torch

        metrics = {
            "kind": "train",
            "step": self.global_step,
            "epoch": self.epoch,
            "loss": loss,
            "lr": self.lr,
            "logit_scale": float(unwrap(self.model).logit_scale.detach().exp()),
            "text_type": text_type,
            "total_steps": self.total_steps,
        }
        if is_cuda(self.device):
            metrics["max_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        logged = None
        if data_totals is not None:
            self.result.data_problems = dict(data_totals)
            logged = {"bad_samples": self.result.bad_samples, **data_totals}
        self.reporter.step(metrics, logged)

    def _stop_if_signalled(self, batch: int) -> None:
        """Save and stop when any rank got a stop signal (a collective): InterruptedByUser
        after Ctrl-C, PreemptedError after SIGTERM/SIGUSR1."""
        if not any_rank(self.signals.received is not None, self.device):
            return
        self.batch_in_epoch = batch  # this batch was not trained on
        self.save_checkpoint()
        if self.signals.interrupted:
            raise InterruptedByUser(
                f"interrupted at step {self.global_step}; checkpoint saved",
                hint="rerun the same command to continue the run from there",
            )
        raise PreemptedError(
            f"stopped by {self.signals.received or 'a signal on another rank'} at step "
            f"{self.global_step}; checkpoint saved",
            hint="requeue the job, or rerun the same command: it continues from the checkpoint",
        )

    # -- checkpoints, validation, the end --------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Rank 0 saves the run's state at the current position; every rank waits for it."""
        shards = all_ranks(self.data_tally, self.device)
        if self.is_main:
            self.result.last_checkpoint = save_training_checkpoint(
                self.run_dir,
                model=unwrap(self.model),
                optimizer=self.optimizer,
                scaler=self.scaler,
                cfg_dict=self.cfg_dict,
                step=self.global_step,
                epoch=self.epoch,
                batch_in_epoch=self.batch_in_epoch,
                data_info={
                    "workers": self.plan.workers,
                    "world_size": self.env.world_size,
                    "batch_size": self.plan.batch_size,
                    "shards": shards,
                },
                keep_last=self.cfg.keep_last,
            )
        barrier()
        path = self.run_dir / CHECKPOINT_DIR / checkpoint_name(self.global_step)
        self.callbacks.on_checkpoint(self.result.last_checkpoint or path)

    def validate(self) -> None:
        """Rank 0 scores the live model on ``data.val`` and logs it; every rank waits, then
        calls the callbacks (off rank 0 with the record's step and epoch only)."""
        if not self.validating:
            return
        record: dict[str, Any] = {"kind": "eval", "step": self.global_step, "epoch": self.epoch}
        if self.validator is not None:
            self.model.eval()
            try:
                record.update(self.validator(unwrap(self.model), self.global_step))
            finally:
                self.model.train()
            self.result.last_eval = record
            self.reporter.log(record)
        barrier()
        self.callbacks.on_eval(record)

    def _last_evaluation_missing(self) -> bool:
        """Rank 0: the run has validation but metrics.jsonl has no evaluation of this step."""
        if not (self.is_main and self.validating and self.validator is not None):
            return False
        steps = {
            m.get("step") for m in runlib.read_metrics(self.run_dir) if m.get("kind") == "eval"
        }
        return self.global_step not in steps

    def _write_status(self, status: str) -> None:
        import contextlib

        if self.is_main:
            with contextlib.suppress(OSError):  # e.g. the disk is full: keep the first error
                runlib.write_run_json(self.run_dir, status=status, steps=self.global_step)
            self.reporter.set_status(status)

    def _finish(self) -> TrainResult:
        result = self.result
        result.steps, result.epochs_done = self.global_step, self.epoch
        result.seconds = time.time() - self.t_start
        if self.is_main:
            runlib.write_run_json(
                self.run_dir, status="finished", finished=runlib.now_iso(), steps=self.global_step
            )
            self.reporter.set_status("finished")
        self.callbacks.on_end(result)
        return result

    def close(self) -> None:
        """Restore the signal handlers, close the metrics log, leave the process group (one
        this Trainer joined; never one its caller set up)."""
        self._cleanup.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def train(cfg: TrainConfig, **options: Any) -> TrainResult:
    """Train (or continue) a run: a :class:`Trainer` (``options`` are its keyword arguments)
    set up, run and closed. Every rank calls this; rank 0 reports and writes."""
    with Trainer(cfg, **options) as trainer:
        trainer.setup()
        return trainer.run()
