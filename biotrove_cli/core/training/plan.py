"""``biotrove train --dry-run``: check data, model and plan without training."""

from __future__ import annotations

from typing import Any

from biotrove_cli.core.training.config import TrainConfig


def dry_run(cfg: TrainConfig, world_size: int) -> list[dict[str, Any]]:
    """Resolve the shards, captions, architecture and step plan; raise on any problem."""
    from biotrove_cli.core.models import registry
    from biotrove_cli.core.training.data import StreamPlan, check_plan, validate_captions
    from biotrove_cli.core.training.loop import resolve_data

    shards, num_samples, bank = resolve_data(cfg)
    validate_captions(shards, cfg.data.text_type)
    cfg_arch = registry.arch_config(cfg.model.arch)
    if cfg_arch is None:
        from biotrove_cli.core.errors import UsageError

        raise UsageError(
            f"model.arch: unknown architecture {cfg.model.arch!r}",
            hint="any open_clip architecture name, or biotrove-tiny",
        )
    size = cfg_arch.get("vision_cfg", {}).get("image_size", 224)
    plan = StreamPlan(
        shards=tuple(map(str, shards)),
        num_samples=num_samples,
        batch_size=cfg.data.batch_size,
        world_size=world_size,
        rank=0,
        workers=cfg.data.workers,
        resampled=cfg.data.resampled,
        seed=cfg.seed,
        text_type=cfg.data.text_type,
        accum=cfg.optim.accum,
        shuffle_buffer=cfg.data.shuffle_buffer,
        image_size=int(size),
    )
    check_plan(plan)
    total = cfg.max_steps if cfg.max_steps else plan.steps_per_epoch * cfg.epochs
    return [
        {"key": "shards", "value": len(shards)},
        {"key": "samples_per_epoch", "value": num_samples},
        {"key": "species_in_dataset", "value": len(bank) if bank is not None else None},
        {"key": "processes", "value": world_size},
        {"key": "global_batch", "value": cfg.data.batch_size * world_size * cfg.optim.accum},
        {"key": "steps_per_epoch", "value": plan.steps_per_epoch},
        {"key": "total_steps", "value": total},
        {"key": "arch", "value": cfg.model.arch},
        {"key": "init", "value": cfg.model.init},
        {"key": "text_type", "value": cfg.data.text_type},
        {"key": "run_dir", "value": cfg.run_dir},
    ]
