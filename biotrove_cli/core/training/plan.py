"""The plan of a training run: its shards, samples per epoch, label bank, data streams and
step counts (one owner, used by the Trainer and by ``biotrove train --dry-run``), and the dry
run itself: check data, model and plan without training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from biotrove_cli.core.data.shards import ShardSet
from biotrove_cli.core.errors import InputError, TrainingError, UsageError
from biotrove_cli.core.training.config import TrainConfig
from biotrove_cli.core.training.data import StreamPlan

log = logging.getLogger("biotrove")


def resolve_data(cfg: TrainConfig) -> tuple[ShardSet, int, Any]:
    """Training shards (local or remote) with their sizes, samples per epoch, and the label bank
    of the training data (``taxonomy.parquet`` beside the shards, fetched when remote)."""
    from biotrove_cli.core.data import shards as shardlib

    if not cfg.data.train:
        raise UsageError(
            "no training data", hint="pass --data with a shard folder (written by `biotrove shard`)"
        )
    options = shardlib.ReadOptions(retries=cfg.data.retries, timeout=cfg.data.timeout)
    shards = shardlib.open_shards(cfg.data.train, split="train", options=options)
    num_samples = cfg.data.num_samples or shards.total
    if num_samples is None:
        raise TrainingError(
            "the number of training samples is unknown: "
            + (shards.sizes_note or "no sizes.json beside the shards"),
            hint="set data.num_samples=N (the samples in one epoch), or point --data at shards "
            "written by `biotrove shard` (it writes sizes.json beside them)",
        )
    if num_samples == 0:
        raise InputError(
            f"{cfg.data.train}: the training shards hold no samples",
            hint="check the shard folder (biotrove info DIR)",
        )
    return shards, num_samples, _label_bank(shards)


def _label_bank(shards: ShardSet) -> Any:
    from biotrove_cli.core.data.shards import taxonomy_file
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    with taxonomy_file(shards) as (path, source):
        if path is None:
            log.debug("no label bank for this run: %s", source)
            return None
        try:
            bank = LabelBank.load(path)
        except Exception as exc:  # the bank is a convenience for eval/classify, not training
            log.warning("cannot read %s (%s); the run will have no label bank", source, exc)
            return None
        bank.source = source
        return bank


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps a run takes, and over how many epochs."""

    steps_per_epoch: int
    total_steps: int
    num_epochs: int


def stream_plan(
    cfg: TrainConfig,
    shards: ShardSet,
    num_samples: int,
    *,
    world_size: int,
    rank: int,
    image_size: int,
) -> tuple[StreamPlan, Schedule]:
    """The data streams of one rank and the run's step counts; refuses plans that cannot work."""
    from biotrove_cli.core.training.data import check_plan

    plan = StreamPlan(
        shards=tuple(shards.locations),
        num_samples=num_samples,
        batch_size=cfg.data.batch_size,
        world_size=world_size,
        rank=rank,
        workers=cfg.data.workers,
        resampled=cfg.data.resampled,
        seed=cfg.seed,
        text_type=cfg.data.text_type,
        accum=cfg.optim.accum,
        shuffle_buffer=cfg.data.shuffle_buffer,
        image_size=image_size,
        decode_on_device=cfg.data.decode == "device",
        sizes=shards.expected(),
        retries=cfg.data.retries,
        timeout=cfg.data.timeout,
    )
    check_plan(plan)
    per_epoch = plan.steps_per_epoch
    total = cfg.max_steps if cfg.max_steps is not None else per_epoch * cfg.epochs
    return plan, Schedule(per_epoch, total, math.ceil(total / per_epoch))


def dry_run(cfg: TrainConfig, world_size: int) -> list[dict[str, Any]]:
    """Check everything a real run checks before its first step, and train nothing: the
    device, the shards, captions and step plan, and the initial weights (loaded weights-only
    and fitted to the architecture, as the run would); raise on any problem."""
    from biotrove_cli.core.runtime import resolve_device
    from biotrove_cli.core.training.data import validate_captions
    from biotrove_cli.core.training.model import arch_config, create_model, init_weights

    device = resolve_device(cfg.device, option="device")
    shards, num_samples, bank = resolve_data(cfg)
    validate_captions(shards, cfg.data.text_type)
    size = arch_config(cfg.model.arch).get("vision_cfg", {}).get("image_size", 224)
    plan, schedule = stream_plan(
        cfg, shards, num_samples, world_size=world_size, rank=0, image_size=int(size)
    )
    init_weights(cfg, create_model(cfg, device="meta").state_dict())
    return [
        {"key": "shards", "value": len(shards)},
        {"key": "samples_per_epoch", "value": num_samples},
        {"key": "species_in_dataset", "value": len(bank) if bank is not None else None},
        {"key": "processes", "value": world_size},
        {"key": "global_batch", "value": cfg.data.batch_size * world_size * cfg.optim.accum},
        {"key": "steps_per_epoch", "value": schedule.steps_per_epoch},
        {"key": "total_steps", "value": schedule.total_steps},
        {"key": "arch", "value": cfg.model.arch},
        {"key": "init", "value": cfg.model.init},
        {"key": "device", "value": device},
        {"key": "text_type", "value": cfg.data.text_type},
        {"key": "run_dir", "value": cfg.run_dir},
    ]
