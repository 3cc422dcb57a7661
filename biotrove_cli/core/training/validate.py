"""Periodic zero-shot evaluation during training (rank 0), through the eval engine.

The live model is scored exactly as ``biotrove eval --data VAL`` would score a checkpoint of it:
same dataset resolution (the split's species as classes), same classifier (species roll-up to
every rank), same metrics. The text cache is bypassed: the text tower changes every step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from biotrove_cli.core.taxonomy.rank import RANKS

log = logging.getLogger("biotrove")


@dataclass
class LiveModel:
    """The training model seen through the LoadedModel interface the eval engine needs."""

    model: Any
    preprocess: Any
    tokenizer: Any
    image_size: int
    spec: str = "training model"
    class_embeddings: Any = None
    labels: Any = None
    _describe: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def text_fingerprint(self) -> str:
        from biotrove_cli.core.models.loaded import text_tower_fingerprint

        return text_tower_fingerprint(self.model, self.tokenizer)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, **self._describe}


def make_validator(cfg: Any, device: str) -> Callable[[Any, int], dict[str, Any]] | None:
    """A function (model, step) -> flat metrics, or None when no validation data is set."""
    if not cfg.data.val:
        return None
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from biotrove_cli.core.evaluation.config import EvalConfig
    from biotrove_cli.core.evaluation.data import open_dataset
    from biotrove_cli.core.evaluation.scoring import score_model
    from biotrove_cli.core.evaluation.zeroshot import Mode

    ecfg = EvalConfig(
        models=[],
        data=cfg.data.val,
        split="val",
        ranks=list(RANKS),
        modes=[Mode.ROLLUP],
        batch_size=min(256, max(32, cfg.data.batch_size)),
        device=device,
        precision="auto",
        workers=0,
        limit=cfg.data.val_limit,
        use_cache=False,
        strict=cfg.data.strict,
        retries=cfg.data.retries,
        timeout=cfg.data.timeout,
    )
    dataset = open_dataset(ecfg)  # fails before training when the val data is unusable
    tokenizer = open_clip.get_tokenizer(cfg.model.arch)

    def validate(model: Any, step: int) -> dict[str, Any]:
        pcfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
        size = pcfg.size[0] if isinstance(pcfg.size, (tuple, list)) else int(pcfg.size)
        live = LiveModel(
            model=model,
            preprocess=image_transform_v2(pcfg, is_train=False),
            tokenizer=tokenizer,
            image_size=size,
            spec=f"step {step}",
        )
        tally = score_model(live, dataset, ecfg, label=f"step {step}")
        out: dict[str, Any] = {"val_images": tally.n_seen}
        if tally.species_nll_n:
            # the zero-shot species cross-entropy: a loss that falls smoothly as training works
            out["loss"] = tally.species_nll / tally.species_nll_n
        for rank in ecfg.ranks:
            m = tally.tallies[(Mode.ROLLUP, rank)].metrics()
            out[f"top1_{rank.value}"] = m["top1"]
            out[f"top5_{rank.value}"] = m["top5"]
        out["val_seconds"] = tally.timings.get("images_s")
        if tally.shard_problems:  # validation shards that could not be read or ended early
            from biotrove_cli.core.evaluation.reports import shard_notes

            for note in shard_notes(tally):
                log.warning("validation: %s", note)
            out["val_lost_samples"] = tally.lost_samples
        return out

    return validate
