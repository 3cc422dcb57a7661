"""The optimiser and the learning-rate schedule of a training run.

AdamW with open_clip's weight-decay rule (none on gains, biases and the logit scale), fused
where torch has a fused kernel; the schedule is open_clip_train's (cosine, const or
const-cooldown after a linear warmup), a function ``step -> lr`` that sets the rate itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from biotrove_cli.core.training.config import TrainConfig


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


def make_optimizer(cfg: TrainConfig, model: Any, precision: str) -> Any:
    """AdamW over :func:`param_groups`."""
    import torch

    return torch.optim.AdamW(
        param_groups(model, cfg.optim.wd),
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        # fused AdamW (one kernel over all parameters) exists for CUDA and CPU float tensors
        **({"fused": True} if precision != "bf16" else {}),
    )


def make_scaler(precision: str, device: str) -> Any:
    """A gradient scaler for float16 autocast on CUDA (``amp``); None otherwise."""
    import torch

    from biotrove_cli.core.runtime import is_cuda

    return torch.amp.GradScaler("cuda") if precision == "amp" and is_cuda(device) else None
