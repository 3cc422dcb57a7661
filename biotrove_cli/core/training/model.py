"""The model being trained: built from its architecture, with initial weights from
``model.init``, a text tower that stops at each batch's longest caption, and the autocast of
its precision.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from biotrove_cli.core.errors import TrainingError, UsageError
from biotrove_cli.core.training.config import TrainConfig


def arch_config(arch: str) -> dict:
    """open_clip's config of a trainable architecture; UsageError when there is none."""
    from biotrove_cli.core.models import registry

    found = registry.arch_config(arch)
    if found is None:
        raise UsageError(
            f"model.arch: unknown architecture {arch!r}",
            hint="any open_clip architecture name, or biotrove-tiny",
        )
    return found


def build_training_model(cfg: TrainConfig, device: str, precision: str) -> tuple[Any, Any, Any]:
    """(model, train transform, tokenizer) with initial weights from ``model.init``."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    arch = cfg.model.arch
    model_precision = precision if precision in ("bf16", "pure_bf16") else "fp32"
    model = create_model(cfg, precision=model_precision)
    sd = init_weights(cfg, model.state_dict())
    if sd is not None:
        model.load_state_dict(sd)
        del sd
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    trim_text_padding(model)
    model.to(device)
    pcfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    transform = image_transform_v2(pcfg, is_train=True)
    tokenizer = open_clip.get_tokenizer(arch)
    return model, transform, tokenizer


def create_model(cfg: TrainConfig, precision: str = "fp32", device: str = "cpu") -> Any:
    """A randomly initialised model of ``model.arch`` (``device="meta"``: shapes only, no
    memory, for the dry run)."""
    import open_clip
    import torch

    from biotrove_cli.core.models import registry
    from biotrove_cli.core.models.hub import quiet_open_clip

    registry.ensure_registered()  # open_clip must know the shipped tiny architecture
    arch_config(cfg.model.arch)
    with quiet_open_clip(), torch.device(device):
        return open_clip.create_model(
            cfg.model.arch,
            pretrained=None,
            precision=precision,
            device=device,
            force_quick_gelu=cfg.model.quick_gelu,
        )


def init_weights(cfg: TrainConfig, own: dict[str, Any]) -> dict[str, Any] | None:
    """The state dict of ``model.init`` (None for random weights), loaded as every model is
    (weights-only, finite) and checked against the model's own tensors ``own``.

    Raises:
        ModelLoadError (and subclasses): the init is missing, unreadable, unsafe or not finite.
        TrainingError: its tensors do not fit ``model.arch``.
    """
    from biotrove_cli.core.models.load import load_model

    init = (cfg.model.init or "none").strip()
    if init.lower() in ("none", "random", ""):
        return None
    arch = cfg.model.arch
    source = load_model(init, arch=None if ":" in init else arch)
    sd = source.model.state_dict()
    bad = [k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise TrainingError(
            f"model.init {init!r} ({source.arch}) does not fit model.arch {arch!r}: "
            f"{len(bad)} tensor(s) differ (e.g. {bad[0]})",
            hint="choose an init of the same architecture, or model.init=none",
        )
    return sd


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


def unwrap(model: Any) -> Any:
    """The model inside DDP and torch.compile wrappers."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def parallelize(model: Any, cfg: TrainConfig, device: str, world_size: int) -> Any:
    """The model the loop calls: wrapped in DDP across ranks, compiled with ``model.compile``."""
    import torch

    from biotrove_cli.core.runtime import is_cuda

    wrapped = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_args: dict[str, Any] = {}
        if cfg.ddp_static_graph:
            ddp_args["static_graph"] = True
        if is_cuda(device):
            ddp_args["device_ids"] = [torch.device(device).index]
        wrapped = DDP(model, **ddp_args)
    if cfg.model.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def image_size(model: Any) -> int:
    """The (square) input size of the image tower."""
    size = unwrap(model).visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def autocast_for(precision: str, device: str) -> Callable[[], AbstractContextManager]:
    """A factory of the forward pass's autocast context for a training precision."""
    import torch

    if precision == "amp":
        return lambda: torch.amp.autocast(device_type=device.split(":")[0], dtype=torch.float16)
    if precision == "amp_bf16":
        return lambda: torch.amp.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return nullcontext
