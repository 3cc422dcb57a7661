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

import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli import __version__
from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import InputError, PreemptedError, TrainingError, UsageError
from biotrove_cli.core.training import run as runlib
from biotrove_cli.core.training.config import SCHEDULE_KEYS, TrainConfig

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


# -- helpers -------------------------------------------------------------------------------------
def resolve_device(cfg: TrainConfig, local_rank: int) -> str:
    import torch

    want = (cfg.device or "auto").lower()
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("device=cuda but CUDA is not available", hint="use device=cpu")
        return f"cuda:{local_rank}" if want == "cuda" else want
    return want


def resolve_precision(cfg: TrainConfig, device: str) -> str:
    if cfg.precision == "auto":
        return "amp_bf16" if device.startswith("cuda") else "fp32"
    if cfg.precision != "fp32" and not device.startswith("cuda"):
        log.warning(
            "precision %s on the CPU is very slow here; fp32 is the CPU default "
            "(set precision=fp32)",
            cfg.precision,
        )
    return cfg.precision


def autocast_for(precision: str, device: str):
    import torch

    if precision == "amp":
        return lambda: torch.amp.autocast(device_type=device.split(":")[0], dtype=torch.float16)
    if precision == "amp_bf16":
        return lambda: torch.amp.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return nullcontext


def param_groups(model: Any, wd: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on gains, biases and the logit scale (open_clip's rule)."""

    def exclude(n: str, p: Any) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd},
    ]


def make_scheduler(cfg: TrainConfig, optimizer: Any, total_steps: int) -> Callable[[int], float]:
    from open_clip_train.scheduler import const_lr, const_lr_cooldown, cosine_lr

    warmup = min(cfg.optim.warmup, max(1, total_steps - 1))
    if cfg.optim.schedule == "cosine":
        return cosine_lr(optimizer, cfg.optim.lr, warmup, total_steps)
    if cfg.optim.schedule == "const":
        return const_lr(optimizer, cfg.optim.lr, warmup, total_steps)
    cooldown = max(1, total_steps // 10)
    return const_lr_cooldown(optimizer, cfg.optim.lr, warmup, total_steps, cooldown)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    try:
        torch.set_rng_state(state["torch"])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        keys = state["numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        log.warning("could not restore RNG states (%s); continuing with fresh ones", exc)


class _Signals:
    """SIGTERM / SIGUSR1 set a flag; the loop saves and stops at the next step boundary."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass


def _any_rank(flag: bool, device: str) -> bool:
    """True if ``flag`` is set on any rank (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# -- data ----------------------------------------------------------------------------------------
def resolve_data(cfg: TrainConfig) -> tuple[list[Path], int, Any]:
    """Training shards, samples per epoch, and the label bank of the training data."""
    from biotrove_cli.core.data import shards as shardlib
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    if not cfg.data.train:
        raise UsageError(
            "no training data", hint="pass --data with a shard folder (written by `biotrove shard`)"
        )
    shards = shardlib.resolve_shards(cfg.data.train, split="train")
    total = shardlib.count_samples(shards)
    num_samples = cfg.data.num_samples or total
    if num_samples is None:
        raise TrainingError(
            "the number of training samples is unknown: no sizes.json beside the shards",
            hint="set data.num_samples=N, or point --data at a folder written by "
            "`biotrove shard` (it writes sizes.json)",
        )
    if num_samples == 0:
        raise InputError(
            f"{cfg.data.train}: the training shards hold no samples",
            hint="check the shard folder (biotrove info DIR)",
        )
    root = shardlib.dataset_root(shards)
    bank = None
    if root is not None:
        try:
            bank = LabelBank.load(root / shardlib.TAXONOMY)
        except Exception as exc:  # the bank is a convenience for eval/classify, not training
            log.warning(
                "cannot read %s (%s); the run will have no label bank",
                root / shardlib.TAXONOMY,
                exc,
            )
    return shards, num_samples, bank


# -- model ---------------------------------------------------------------------------------------
def build_training_model(cfg: TrainConfig, device: str, precision: str) -> tuple[Any, Any, Any]:
    """(model, train transform, tokenizer) with initial weights from ``model.init``."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from biotrove_cli.core.models import registry
    from biotrove_cli.core.models.hub import quiet_open_clip
    from biotrove_cli.core.models.load import load_model

    registry.ensure_registered()
    arch = cfg.model.arch
    if registry.arch_config(arch) is None:
        raise UsageError(
            f"model.arch: unknown architecture {arch!r}",
            hint="any open_clip architecture name, or biotrove-tiny",
        )
    model_precision = precision if precision in ("bf16", "pure_bf16") else "fp32"
    with quiet_open_clip():
        model = open_clip.create_model(
            arch,
            pretrained=None,
            precision=model_precision,
            device="cpu",
            force_quick_gelu=cfg.model.quick_gelu,
        )
    init = (cfg.model.init or "none").strip()
    if init.lower() not in ("none", "random", ""):
        source = load_model(init, arch=None if ":" in init else arch)
        sd = source.model.state_dict()
        own = model.state_dict()
        bad = [k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
        if bad:
            raise TrainingError(
                f"model.init {init!r} ({source.arch}) does not fit model.arch {arch!r}: "
                f"{len(bad)} tensor(s) differ (e.g. {bad[0]})",
                hint="choose an init of the same architecture, or model.init=none",
            )
        model.load_state_dict(sd)
        del source
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    trim_text_padding(model)
    model.to(device)
    pcfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    transform = image_transform_v2(pcfg, is_train=True)
    tokenizer = open_clip.get_tokenizer(arch)
    return model, transform, tokenizer


def trim_text_padding(model: Any) -> bool:
    """Run the text tower only up to each batch's longest caption (exact, much cheaper).

    CLIP's text tower attends causally and pools at the end-of-text token, so the padding after
    it changes neither the features nor any gradient; taxonomic captions fill about half of the
    77-token context. Installed as the instance's ``encode_text`` so that ``forward`` (and DDP's
    hooks around it) stay as they are. Returns False for text towers it does not apply to.
    """
    import torch.nn.functional as F

    from biotrove_cli.core.evaluation.text import trimmed_text_encoder

    encode = trimmed_text_encoder(model)
    if encode is None:
        return False

    def encode_text(text: Any, normalize: bool = False) -> Any:
        features = encode(text)
        return F.normalize(features, dim=-1) if normalize else features

    model.encode_text = encode_text
    return True


def _unwrap(model: Any) -> Any:
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


# -- checkpoints ---------------------------------------------------------------------------------
def save_training_checkpoint(
    run_dir: Path,
    *,
    model: Any,
    optimizer: Any,
    scaler: Any,
    cfg_dict: dict,
    step: int,
    epoch: int,
    batch_in_epoch: int,
    plan_info: dict,
    keep_last: int,
) -> Path:
    from biotrove_cli.core.models.checkpoint import (
        CHECKPOINT_DIR,
        checkpoint_name,
        prune_checkpoints,
        save_checkpoint,
        write_latest,
    )

    path = run_dir / CHECKPOINT_DIR / checkpoint_name(step)
    payload = {
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "name": cfg_dict.get("model", {}).get("arch"),
        "state_dict": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "data": plan_info,
        "config": cfg_dict,
        "biotrove_version": __version__,
    }
    save_checkpoint(path, payload)
    write_latest(run_dir, path)
    prune_checkpoints(run_dir, keep_last, protect=(path,))
    return path


def _schedule_changes(old: dict, new: dict) -> list[str]:
    old_flat, new_flat = configlib.flatten(old), configlib.flatten(new)
    return [
        f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}"
        for k in SCHEDULE_KEYS
        if old_flat.get(k) != new_flat.get(k)
    ]


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> Path | None:
    from biotrove_cli.core.models.checkpoint import resolve_latest

    if not resume:
        return None
    if resume == "latest":
        path = resolve_latest(run_dir)
        if path is None:
            raise TrainingError(
                f"--resume latest: {run_dir} has no complete checkpoint",
                hint="start the run without --resume",
            )
        return path
    if resume == "auto":  # torchrun restarts: latest if any, else a fresh start
        return resolve_latest(run_dir)
    path = Path(resume)
    if not path.is_file():
        raise InputError(
            f"--resume {resume}: no such checkpoint file",
            hint="use --resume latest, or a path to a step-*.pt file",
        )
    return path


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

    from biotrove_cli.core.distributed.env import barrier, destroy_process_group, init_process_group
    from biotrove_cli.core.io import atomic_write_text
    from biotrove_cli.core.models.checkpoint import safe_load
    from biotrove_cli.core.training.data import (
        StreamPlan,
        check_plan,
        make_loader,
        validate_captions,
    )

    cb = callbacks or Callbacks()
    t_start = time.time()
    env_local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg, env_local_rank)
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
    precision = resolve_precision(cfg, device)
    run_dir = Path(cfg.run_dir)
    cfg_dict = configlib.to_dict(cfg)
    if env.restart_count > 0 and resume is None:
        resume = "auto"  # torchrun restarted us after a failure: continue the same run

    # -- data and checks before anything is written
    shards, num_samples, bank = resolve_data(cfg)
    validate_captions(shards, cfg.data.text_type)
    ckpt_path = find_resume_checkpoint(run_dir, resume)
    if (
        ckpt_path is None
        and is_main
        and (run_dir / "checkpoints").is_dir()
        and any((run_dir / "checkpoints").glob("step-*.pt"))
    ):
        raise TrainingError(
            f"{run_dir} already holds a run with checkpoints",
            hint="continue it with --resume latest, or choose a new --run-dir",
        )

    # the validation data is checked before anything is trained or written
    validate = (
        validator_factory(cfg, device) if (validator_factory and cfg.data.val and is_main) else None
    )
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model, transform, tokenizer = build_training_model(cfg, device, precision)
    image_size = _unwrap(model).visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    plan = StreamPlan(
        shards=tuple(str(s) for s in shards),
        num_samples=num_samples,
        batch_size=cfg.data.batch_size,
        world_size=world,
        rank=rank,
        workers=cfg.data.workers,
        resampled=cfg.data.resampled,
        seed=cfg.seed,
        text_type=cfg.data.text_type,
        accum=cfg.optim.accum,
        shuffle_buffer=cfg.data.shuffle_buffer,
        image_size=image_size,
        decode_on_device=cfg.data.decode == "device",
    )
    check_plan(plan)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = cfg.max_steps if cfg.max_steps is not None else steps_per_epoch * cfg.epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)

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
        state = safe_load(ckpt_path)
        old_cfg = state.get("config") or {}
        changes = _schedule_changes(old_cfg, cfg_dict)
        if changes and not allow_config_change:
            raise TrainingError(
                "resuming with a different schedule would silently change the run: "
                + "; ".join(changes),
                hint="resume with the original settings, or pass --allow-config-change",
            )
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
        run_dir.mkdir(parents=True, exist_ok=True)
        header = f"biotrove {__version__} resolved training config"
        atomic_write_text(run_dir / runlib.CONFIG, configlib.dump_yaml(cfg, header=header))
        if bank is not None and not (run_dir / runlib.LABELS).exists():
            bank.save(run_dir / runlib.LABELS)
        runlib.write_run_json(
            run_dir,
            status="running",
            world_size=world,
            started=runlib.now_iso()
            if resumed_from is None
            else runlib.read_run_json(run_dir).get("started", runlib.now_iso()),
            data=cfg.data.train,
            device=device,
            precision=precision,
            resumed_from=str(resumed_from) if resumed_from else None,
        )
    barrier()
    metrics_fh = open(run_dir / runlib.METRICS, "a", encoding="utf-8") if is_main else None  # noqa: SIM115
    tb = _tensorboard(run_dir) if is_main else None

    def log_metrics(record: dict[str, Any]) -> None:
        if metrics_fh is not None:
            metrics_fh.write(json.dumps(record) + "\n")
            metrics_fh.flush()
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, record.get("step", 0))

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

    signals = _Signals()
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

    def checkpoint(reason: str) -> None:
        nonlocal last_ckpt
        if is_main:
            last_ckpt = save_training_checkpoint(
                run_dir,
                model=model,
                optimizer=optimizer,
                scaler=scaler,
                cfg_dict=cfg_dict,
                step=step,
                epoch=epoch,
                batch_in_epoch=batch_in_epoch,
                plan_info=plan_info,
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
                stop_now = _any_rank(signals.received is not None, device)
                if stop_now:
                    batch_in_epoch = b  # this batch was not trained on
                    checkpoint("preempted")
                    raise PreemptedError(
                        f"stopped by {signals.received or 'a signal on another rank'} at step "
                        f"{step}; checkpoint saved",
                        hint="requeue the job, or run the same command with --resume latest",
                    )
                if _any_rank(not batch["valid"], device):
                    skipped += 1  # no decodable image in this batch on some rank
                    continue
                if cfg.data.decode == "device":
                    from biotrove_cli.core.training.data import device_images

                    pc = _unwrap(model).visual.preprocess_cfg
                    images = device_images(
                        batch["images"],
                        image_size,
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
                if _any_rank(not finite, device):
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
                    checkpoint("every")
                if cfg.val_every and step % cfg.val_every == 0:
                    run_validation()
                if step >= total_steps:
                    done = True
                    break
            if batch_in_epoch >= plan.batches_per_epoch:
                epoch += 1
                batch_in_epoch = 0
            checkpoint("epoch")
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
        if metrics_fh is not None:
            metrics_fh.close()
        if tb is not None:
            tb.close()
        destroy_process_group()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    except Exception:  # tensorboard present but broken: metrics.jsonl still has everything
        return None
