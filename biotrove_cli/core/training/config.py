"""The training configuration: typed groups with a help text per field.

Presets (YAML in ``biotrove_cli/core/presets``) reproduce the BioTrove-CLIP recipe of the model
card; ``tiny`` trains the shipped tiny architecture on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from biotrove_cli.core.config import cfg_field
from biotrove_cli.core.taxonomy.captions import TEXT_TYPES
from biotrove_cli.core.training.trackers import TRACKERS

Precision = Literal["auto", "fp32", "amp", "amp_bf16", "bf16", "pure_bf16"]
TEXT_TYPE_CHOICES = (*TEXT_TYPES, "random", "random-per-sample")


@dataclass
class ModelConfig:
    arch: str = cfg_field(
        "biotrove-tiny", "open_clip architecture (ViT-B-16, ViT-L-14-quickgelu, biotrove-tiny, ...)"
    )
    init: str = cfg_field(
        "none",
        "initial weights as a load_model spec (ViT-B-16:openai, "
        "hf-hub:imageomics/bioclip, a .pt file), or none for random weights",
    )
    quick_gelu: bool = cfg_field(False, "use QuickGELU activations (OpenAI/MetaCLIP weights)")
    grad_checkpointing: bool = cfg_field(False, "recompute activations in backward to save memory")
    compile: bool = cfg_field(False, "torch.compile the model")


@dataclass
class DataConfig:
    train: str = cfg_field(
        "",
        "training shards: a shard folder (its train/ split), a split folder, a brace pattern, "
        "http(s)://, s3:// or gs:// URLs, or pipe:COMMAND",
    )
    val: str = cfg_field("", "validation shards for the periodic zero-shot evaluation")
    resampled: bool = cfg_field(False, "sample shards with replacement (an epoch = num_samples)")
    num_samples: int | None = cfg_field(
        None, "samples per epoch (default: the dataset size from sizes.json)"
    )
    retries: int = cfg_field(3, "retries (with backoff) of a shard that fails to open or read")
    timeout: float = cfg_field(60.0, "seconds a remote shard read may wait for data")
    strict: bool = cfg_field(
        False, "stop at a shard that cannot be read or ends early (default: count it, go on)"
    )
    text_type: str = cfg_field(
        "taxon_com",
        "caption type: one of the BioTrove text types, "
        "'random' (one type per batch, as BioTrove did) or "
        "'random-per-sample'",
    )
    batch_size: int = cfg_field(64, "samples per process per step")
    workers: int = cfg_field(2, "data loader worker processes per training process")
    shuffle_buffer: int = cfg_field(1000, "in-memory sample shuffle buffer per worker")
    val_limit: int = cfg_field(2000, "at most this many validation images per evaluation")
    decode: Literal["workers", "device"] = cfg_field(
        "workers",
        "where JPEGs are decoded and augmented: in the data workers (PIL), or on the "
        "training device (nvjpeg on GPUs; frees the CPU workers)",
    )


@dataclass
class OptimConfig:
    lr: float = cfg_field(5e-4, "peak learning rate")
    wd: float = cfg_field(0.2, "AdamW weight decay (not applied to gains, biases, logit scale)")
    beta1: float = cfg_field(0.9, "AdamW beta1")
    beta2: float = cfg_field(0.98, "AdamW beta2")
    eps: float = cfg_field(1e-6, "AdamW epsilon")
    warmup: int = cfg_field(100, "linear warmup steps")
    schedule: Literal["cosine", "const", "const-cooldown"] = cfg_field(
        "cosine", "learning-rate schedule after warmup"
    )
    accum: int = cfg_field(1, "gradient accumulation steps per optimizer step")
    grad_clip: float | None = cfg_field(None, "clip gradients to this global norm")


@dataclass
class TrackingConfig:
    report_to: list[str] = cfg_field(
        [], "experiment trackers besides metrics.jsonl: any of tensorboard, wandb, mlflow"
    )
    project: str = cfg_field("biotrove", "the wandb project and the MLflow experiment")
    group: str = cfg_field("", "wandb group / MLflow tag of related runs (a tune search: its name)")
    mlflow_uri: str = cfg_field(
        "",
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a file store in the run "
        "folder's mlruns/)",
    )


@dataclass
class TrainConfig:
    model: ModelConfig = cfg_field(help="the model", default_factory=ModelConfig)
    data: DataConfig = cfg_field(help="the data", default_factory=DataConfig)
    optim: OptimConfig = cfg_field(help="the optimizer and schedule", default_factory=OptimConfig)
    tracking: TrackingConfig = cfg_field(
        help="experiment trackers (--report-to)", default_factory=TrackingConfig
    )
    epochs: int = cfg_field(1, "training epochs")
    max_steps: int | None = cfg_field(
        None, "train exactly this many optimizer steps (overrides epochs; the schedule spans them)"
    )
    precision: Precision = cfg_field("auto", "auto = fp32 on CPU, amp_bf16 on GPU")
    local_loss: bool = cfg_field(False, "contrastive loss against the local batch only")
    gather_with_grad: bool = cfg_field(False, "all-gather features with gradients")
    ddp_static_graph: bool = cfg_field(False, "DDP static graph optimisation")
    seed: int = cfg_field(0, "random seed (data order, init, text-type choice)")
    device: str = cfg_field("auto", "auto, cpu, cuda")
    run_dir: str = cfg_field("", "where config, metrics and checkpoints go (default runs/NAME)")
    save_every: int = cfg_field(0, "save a checkpoint every N steps (0: at epoch ends only)")
    keep_last: int = cfg_field(3, "keep the newest N step checkpoints")
    log_every: int = cfg_field(10, "log metrics every N steps")
    val_every: int = cfg_field(
        0, "zero-shot evaluation on data.val every N steps (0: at epoch ends)"
    )
    max_nonfinite: int = cfg_field(5, "stop after this many non-finite losses in a row")

    def validate(self) -> list[str]:
        problems = []
        if self.data.text_type not in TEXT_TYPE_CHOICES:
            problems.append(
                f"data.text_type: expected one of {', '.join(TEXT_TYPE_CHOICES)}, "
                f"got {self.data.text_type!r}"
            )
        for name, value in (
            ("data.batch_size", self.data.batch_size),
            ("epochs", self.epochs),
            ("optim.accum", self.optim.accum),
            ("log_every", self.log_every),
            ("max_nonfinite", self.max_nonfinite),
        ):
            if value < 1:
                problems.append(f"{name}: must be at least 1, got {value}")
        for name, value in (
            ("data.workers", self.data.workers),
            ("optim.warmup", self.optim.warmup),
            ("save_every", self.save_every),
            ("keep_last", self.keep_last),
            ("val_every", self.val_every),
            ("data.shuffle_buffer", self.data.shuffle_buffer),
            ("data.retries", self.data.retries),
        ):
            if value < 0:
                problems.append(f"{name}: must not be negative, got {value}")
        if self.data.timeout <= 0:
            problems.append(f"data.timeout: must be positive, got {self.data.timeout}")
        if self.optim.lr <= 0:
            problems.append(f"optim.lr: must be positive, got {self.optim.lr}")
        if self.optim.wd < 0:
            problems.append(f"optim.wd: must not be negative, got {self.optim.wd}")
        for name, value in (("optim.beta1", self.optim.beta1), ("optim.beta2", self.optim.beta2)):
            if not 0 <= value < 1:
                problems.append(f"{name}: must be in [0, 1), got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps: must be at least 1, got {self.max_steps}")
        if self.data.num_samples is not None and self.data.num_samples < 1:
            problems.append(f"data.num_samples: must be at least 1, got {self.data.num_samples}")
        if self.optim.grad_clip is not None and self.optim.grad_clip <= 0:
            problems.append(f"optim.grad_clip: must be positive, got {self.optim.grad_clip}")
        unknown = [t for t in self.tracking.report_to if t not in TRACKERS]
        if unknown:
            problems.append(
                f"tracking.report_to: unknown tracker {', '.join(map(repr, unknown))} "
                f"(use any of {', '.join(TRACKERS)})"
            )
        return problems


# the keys that define the learning-rate schedule: changing them on resume is refused
SCHEDULE_KEYS = (
    "optim.lr",
    "optim.warmup",
    "optim.schedule",
    "epochs",
    "max_steps",
    "data.batch_size",
    "optim.accum",
    "data.num_samples",
    "data.resampled",
    "model.arch",
    "seed",
)


def preset_records() -> list[dict]:
    """One row per shipped preset: what it is and the values that matter."""
    from biotrove_cli.core import config

    rows = []
    for name in config.list_presets():
        cfg = config.resolve(TrainConfig, preset=name)
        head = config.preset_header(name)
        rows.append(
            {
                "preset": name,
                "summary": head["description"].split(";")[0],
                "description": head["description"],
                "arch": cfg.model.arch,
                "init": cfg.model.init,
                "epochs": cfg.epochs,
                "batch_size": cfg.data.batch_size,
                "lr": cfg.optim.lr,
                "wd": cfg.optim.wd,
                "warmup": cfg.optim.warmup,
                "precision": cfg.precision,
                "text_type": cfg.data.text_type,
                "command": head["command"],
            }
        )
    return rows
