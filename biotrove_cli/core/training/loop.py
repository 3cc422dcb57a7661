"""The training loop: one process of a (possibly distributed) CLIP training run.

Run directly for one process, or by torchrun workers (``biotrove_cli.cli._worker``). Only rank 0
writes files and reports; every rank takes the same decisions (skip a step, stop, save) by
reducing flags across the process group, so no rank is left waiting in a collective.

Reliability:
* checkpoints every ``save_every`` steps and at epoch ends, atomically, keeping the last K; they
  carry model, optimizer, scaler, step, epoch, batch position, RNG states and the config;
* ``resume="latest"`` skips truncated files; changing the schedule on resume is refused unless
  ``allow_config_change``; under torchrun restarts the workers resume by themselves;
* SIGTERM/SIGUSR1 (SLURM preemption): save, then raise PreemptedError (exit 75 -> requeue);
* a non-finite loss skips the step; ``max_nonfinite`` in a row stops with an error, keeping the
  last good checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import PreemptedError, TrainingError
from biotrove_cli.core.runtime import resolve_device, resolve_precision
from biotrove_cli.core.training import run as runlib
from biotrove_cli.core.training.config import TrainConfig
from biotrove_cli.core.training.model import autocast_for, build_training_model, image_size
from biotrove_cli.core.training.model import unwrap as _unwrap
from biotrove_cli.core.training.optim import make_scheduler, param_groups
from biotrove_cli.core.training.plan import resolve_data, stream_plan
from biotrove_cli.core.training.signals import StopSignals
from biotrove_cli.core.training.state import (
    find_resume_checkpoint,
    load_training_state,
    refuse_to_overwrite,
    save_training_checkpoint,
    set_rng_state,
)

log = logging.getLogger("biotrove")


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    samples: int
    seconds: float
    first_loss: float | None
    last_loss: float | None
    skipped_nonfinite: int
    bad_samples: int
    last_checkpoint: Path | None
    last_eval: dict[str, Any] = field(default_factory=dict)
    resumed_from: Path | None = None


class Callbacks:
    """Hooks for progress and logging (rank 0 only). The CLI passes a Rich implementation."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_step(self, metrics: dict[str, Any]) -> None: ...

    def on_eval(self, metrics: dict[str, Any]) -> None: ...

    def on_checkpoint(self, path: Path) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


# -- validation ----------------------------------------------------------------------------------
Validator = Callable[[Any, int], dict[str, Any]]


# -- the loop --------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    *,
    resume: str | None = None,
    allow_config_change: bool = False,
    callbacks: Callbacks | None = None,
    validator_factory: Callable[..., Validator] | None = None,
) -> TrainResult:
    """Train (or continue) a run. Every rank calls this; rank 0 reports and writes."""
    import torch

    from biotrove_cli.core.distributed.env import (
        any_rank,
        barrier,
        destroy_process_group,
        init_process_group,
    )
    from biotrove_cli.core.training.data import make_loader, validate_captions

    cb = callbacks or Callbacks()
    t_start = time.time()
    env_local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank=env_local_rank, option="device")
    env = init_process_group(device.split(":")[0])
    rank, world = env.rank, env.world_size
    is_main = rank == 0
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    else:
        # the node's cores are shared by its training processes and their data workers;
        # more intra-op threads than cores stall every operator (oversubscribed OpenMP)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        share = max(1, (os.cpu_count() or 1) // local - min(cfg.data.workers, 1))
        torch.set_num_threads(share)
    precision = resolve_precision(cfg.precision, device, training=True)
    run_dir = Path(cfg.run_dir)
    cfg_dict = configlib.to_dict(cfg)
    if env.restart_count > 0 and resume is None:
        resume = "auto"  # torchrun restarted us after a failure: continue the same run

    # -- data and checks before anything is written
    shards, num_samples, bank = resolve_data(cfg)
    validate_captions(shards, cfg.data.text_type)
    ckpt_path = find_resume_checkpoint(run_dir, resume)
    if ckpt_path is None and is_main:
        refuse_to_overwrite(run_dir)

    # the validation data is checked before anything is trained or written
    validate = (
        validator_factory(cfg, device) if (validator_factory and cfg.data.val and is_main) else None
    )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model, transform, tokenizer = build_training_model(cfg, device, precision)
    plan, schedule = stream_plan(
        cfg, shards, num_samples, world_size=world, rank=rank, image_size=image_size(model)
    )
    steps_per_epoch = schedule.steps_per_epoch
    total_steps = schedule.total_steps
    num_epochs = schedule.num_epochs

    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.wd),
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        # fused AdamW (one kernel over all parameters) exists for CUDA and CPU float tensors
        **({"fused": True} if precision != "bf16" else {}),
    )
    scaler = (
        torch.amp.GradScaler("cuda") if precision == "amp" and device.startswith("cuda") else None
    )

    # -- resume
    step = 0
    start_epoch = 0
    start_batch = 0
    resumed_from = None
    if ckpt_path is not None:
        state = load_training_state(ckpt_path, cfg_dict, allow_config_change)
        _unwrap(model).load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        start_epoch = int(state.get("epoch", 0))
        start_batch = int(state.get("batch_in_epoch", 0))
        data_info = state.get("data") or {}
        if data_info.get("workers") not in (None, plan.workers) or data_info.get(
            "world_size"
        ) not in (None, world):
            log.warning(
                "resuming with a different number of data workers or processes: the "
                "data order of the current epoch changes (no sample is lost or seen "
                "twice within an epoch only when they match)"
            )
        if start_batch >= plan.batches_per_epoch:
            start_epoch, start_batch = start_epoch + 1, 0
        if "rng" in state:
            set_rng_state(state["rng"])
        resumed_from = ckpt_path
        del state

    # -- DDP, compile
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_args: dict[str, Any] = {}
        if cfg.ddp_static_graph:
            ddp_args["static_graph"] = True
        if device.startswith("cuda"):
            ddp_args["device_ids"] = [torch.device(device).index]
        train_model = DDP(model, **ddp_args)
    if cfg.model.compile:
        train_model = torch.compile(train_model)

    import open_clip

    loss_fn = open_clip.ClipLoss(
        local_loss=cfg.local_loss,
        gather_with_grad=cfg.gather_with_grad,
        cache_labels=True,
        rank=rank,
        world_size=world,
    )
    scheduler = make_scheduler(cfg, optimizer, max(total_steps, 1))
    autocast = autocast_for(precision, device)

    # -- the run folder (rank 0)
    if is_main:
        runlib.start_run_folder(
            run_dir,
            cfg,
            bank,
            world_size=world,
            device=device,
            precision=precision,
            resumed_from=resumed_from,
        )
    barrier()
    metrics_log = runlib.MetricsLog(run_dir) if is_main else None

    def log_metrics(record: dict[str, Any]) -> None:
        if metrics_log is not None:
            metrics_log.write(record)

    if is_main:
        cb.on_start(
            {
                "run_dir": str(run_dir),
                "total_steps": total_steps,
                "start_step": step,
                "steps_per_epoch": steps_per_epoch,
                "world_size": world,
                "device": device,
                "precision": precision,
                "num_samples": num_samples,
                "shards": len(shards),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "global_batch": cfg.data.batch_size * world * cfg.optim.accum,
            }
        )

    signals = StopSignals()
    signals.install()
    first_loss = last_loss = None
    nonfinite_run = 0
    skipped = 0
    bad_total = 0
    samples_seen = 0
    last_ckpt: Path | None = None
    last_eval: dict[str, Any] = {}
    plan_info = {"workers": plan.workers, "world_size": world, "batch_size": plan.batch_size}
    t_log = time.time()
    samples_since_log = 0
    epoch = start_epoch
    batch_in_epoch = start_batch

    def checkpoint() -> None:
        nonlocal last_ckpt
        if is_main:
            last_ckpt = save_training_checkpoint(
                run_dir,
                model=_unwrap(model),
                optimizer=optimizer,
                scaler=scaler,
                cfg_dict=cfg_dict,
                step=step,
                epoch=epoch,
                batch_in_epoch=batch_in_epoch,
                data_info=plan_info,
                keep_last=cfg.keep_last,
            )
            cb.on_checkpoint(last_ckpt)
        barrier()

    def run_validation() -> None:
        nonlocal last_eval
        if validate is not None:
            model.eval()
            try:
                result = validate(_unwrap(model), step)
            finally:
                model.train()
            last_eval = {"kind": "eval", "step": step, "epoch": epoch, **result}
            log_metrics(last_eval)
            cb.on_eval(last_eval)
        barrier()

    try:
        done = step >= total_steps
        model.train()
        while not done and epoch < num_epochs:
            loader = make_loader(plan, epoch, batch_in_epoch, transform, tokenizer)
            optimizer.zero_grad(set_to_none=True)
            accum_count = 0
            for batch in loader:
                b = batch["batch"]
                batch_in_epoch = b + 1
                bad_total += batch.get("bad", 0)
                stop_now = any_rank(signals.received is not None, device)
                if stop_now:
                    batch_in_epoch = b  # this batch was not trained on
                    checkpoint()
                    raise PreemptedError(
                        f"stopped by {signals.received or 'a signal on another rank'} at step "
                        f"{step}; checkpoint saved",
                        hint="requeue the job, or run the same command with --resume latest",
                    )
                if any_rank(not batch["valid"], device):
                    skipped += 1  # no decodable image in this batch on some rank
                    continue
                if cfg.data.decode == "device":
                    from biotrove_cli.core.training.data import device_images

                    pc = _unwrap(model).visual.preprocess_cfg
                    images = device_images(
                        batch["images"],
                        plan.image_size,
                        tuple(pc["mean"]),
                        tuple(pc["std"]),
                        torch.device(device),
                    )
                else:
                    images = batch["images"].to(device, non_blocking=True)
                tokens = batch["tokens"].to(device, non_blocking=True)
                if precision in ("bf16", "pure_bf16"):
                    images = images.to(torch.bfloat16)
                lr = scheduler(step)
                with autocast():
                    out = train_model(images, tokens)
                    loss = loss_fn(
                        out[0] if not isinstance(out, dict) else out["image_features"],
                        out[1] if not isinstance(out, dict) else out["text_features"],
                        out[2] if not isinstance(out, dict) else out["logit_scale"],
                    )
                    loss = loss / cfg.optim.accum
                finite = bool(torch.isfinite(loss).item())
                if any_rank(not finite, device):
                    nonfinite_run += 1
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    accum_count = 0
                    log.warning(
                        "non-finite loss at step %d: step skipped (%d in a row)",
                        step,
                        nonfinite_run,
                    )
                    if nonfinite_run >= cfg.max_nonfinite:
                        raise TrainingError(
                            f"{nonfinite_run} non-finite losses in a row (last at step {step})",
                            hint="lower optim.lr, raise optim.warmup, or use precision=fp32; "
                            "the last good checkpoint is kept"
                            + (f" ({last_ckpt})" if last_ckpt else ""),
                        )
                    continue
                nonfinite_run = 0
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                accum_count += 1
                samples_seen += images.shape[0] * world
                samples_since_log += images.shape[0] * world
                if accum_count < cfg.optim.accum:
                    continue
                accum_count = 0
                if cfg.optim.grad_clip is not None:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    _unwrap(model).logit_scale.clamp_(0, math.log(100))
                step += 1
                loss_value = float(loss.item()) * cfg.optim.accum
                first_loss = loss_value if first_loss is None else first_loss
                last_loss = loss_value
                if is_main:
                    now = time.time()
                    rate = samples_since_log / max(now - t_log, 1e-9)
                    metrics = {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch,
                        "loss": loss_value,
                        "lr": lr,
                        "logit_scale": float(_unwrap(model).logit_scale.detach().exp()),
                        "samples_per_s": rate,
                        "text_type": batch.get("text_type"),
                        "total_steps": total_steps,
                    }
                    if device.startswith("cuda"):
                        metrics["max_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    cb.on_step(metrics)
                    if step % cfg.log_every == 0 or step == total_steps:
                        metrics["time"] = runlib.now_iso()
                        metrics["bad_samples"] = bad_total
                        log_metrics(metrics)
                        t_log, samples_since_log = now, 0
                if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                    checkpoint()
                if cfg.val_every and step % cfg.val_every == 0:
                    run_validation()
                if step >= total_steps:
                    done = True
                    break
            if batch_in_epoch >= plan.batches_per_epoch:
                epoch += 1
                batch_in_epoch = 0
            checkpoint()
            # val_every=0: evaluate at every epoch end; otherwise every val_every steps, and
            # once more at the end when the last step was not one of those
            if not cfg.val_every or (done and step % cfg.val_every):
                run_validation()
        result = TrainResult(
            run_dir=run_dir,
            steps=step,
            epochs_done=epoch,
            samples=samples_seen,
            seconds=time.time() - t_start,
            first_loss=first_loss,
            last_loss=last_loss,
            skipped_nonfinite=skipped,
            bad_samples=bad_total,
            last_checkpoint=last_ckpt,
            last_eval=last_eval,
            resumed_from=resumed_from,
        )
        if is_main:
            runlib.write_run_json(run_dir, status="finished", finished=runlib.now_iso(), steps=step)
            cb.on_end(result)
        return result
    except PreemptedError:
        if is_main:
            runlib.write_run_json(run_dir, status="preempted", steps=step)
        raise
    except TrainingError:
        if is_main:
            runlib.write_run_json(run_dir, status="failed", steps=step)
        raise
    finally:
        signals.restore()
        if metrics_log is not None:
            metrics_log.close()
        destroy_process_group()
