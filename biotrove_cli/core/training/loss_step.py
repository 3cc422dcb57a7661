"""The Trainer's loss step: forward, contrastive loss, backward, the non-finite guard and the
optimizer step (with gradient accumulation, clipping and the fp16 scaler).

A mixin of :class:`~biotrove_cli.core.training.trainer.Trainer`: it works on the state the
Trainer's setup methods create (model, optimizer, scaler, scheduler, loss, plan, result)."""

from __future__ import annotations

import logging
import math
from typing import Any

from biotrove_cli.core.distributed.env import any_rank
from biotrove_cli.core.errors import TrainingError
from biotrove_cli.core.training.model import unwrap

log = logging.getLogger("biotrove")


class LossStep:
    """:meth:`step` and its parts; the Trainer's attributes are set by its setup."""

    cfg: Any
    result: Any

    def step(self, batch: dict[str, Any]) -> float | None:
        """The loss step: forward, contrastive loss, backward, and an optimizer step once
        ``optim.accum`` batches are in. The loss of that optimizer step, or None while
        accumulating or when the loss was not finite (the step is skipped on every rank)."""
        images, tokens = self._inputs(batch)
        self.lr = self.scheduler(self.global_step)
        with self.autocast():
            out = self.train_model(images, tokens)
            if isinstance(out, dict):
                out = (out["image_features"], out["text_features"], out["logit_scale"])
            loss = self.loss_fn(out[0], out[1], out[2]) / self.cfg.optim.accum
        if not self._finite(loss):
            return None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        self.accum_count += 1
        self.result.samples += images.shape[0] * self.env.world_size
        self.reporter.count(images.shape[0] * self.env.world_size)
        if self.accum_count < self.cfg.optim.accum:
            return None
        self.accum_count = 0
        self._optimizer_step()
        self.global_step += 1
        return float(loss.item()) * self.cfg.optim.accum

    def _inputs(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        """Images (decoded on the device with ``data.decode=device``) and tokens, on device."""
        import torch

        if self.cfg.data.decode == "device":
            from biotrove_cli.core.training.data import device_images

            pc = unwrap(self.model).visual.preprocess_cfg
            images = device_images(
                batch["images"],
                self.plan.image_size,
                tuple(pc["mean"]),
                tuple(pc["std"]),
                torch.device(self.device),
            )
        else:
            images = batch["images"].to(self.device, non_blocking=True)
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        if self.precision in ("bf16", "pure_bf16"):
            images = images.to(torch.bfloat16)
        return images, tokens

    def _finite(self, loss: Any) -> bool:
        """False when the loss is not finite on some rank: the accumulated gradients are
        dropped, and ``max_nonfinite`` in a row stop the run with an error."""
        import torch

        if not any_rank(not bool(torch.isfinite(loss).item()), self.device):
            self.nonfinite_run = 0
            return True
        self.nonfinite_run += 1
        self.result.skipped_nonfinite += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.accum_count = 0
        log.warning(
            "non-finite loss at step %d: step skipped (%d in a row)",
            self.global_step,
            self.nonfinite_run,
        )
        if self.nonfinite_run >= self.cfg.max_nonfinite:
            raise TrainingError(
                f"{self.nonfinite_run} non-finite losses in a row (last at step "
                f"{self.global_step})",
                hint="lower optim.lr, raise optim.warmup, or use precision=fp32; "
                "the last good checkpoint is kept"
                + (f" ({self.result.last_checkpoint})" if self.result.last_checkpoint else ""),
            )
        return False

    def _optimizer_step(self) -> None:
        import torch

        if self.cfg.optim.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            unwrap(self.model).logit_scale.clamp_(0, math.log(100))
