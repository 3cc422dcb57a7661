"""Building open_clip models: a random model of an architecture, strict weight loading with a
plain account of what does not fit, and a state dict into the right (given or inferred)
architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import ModelLoadError, NonFiniteError
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.arch import (
    base_name,
    infer_arch_candidates,
    quickgelu_name,
    state_dict_shapes,
)
from biotrove_cli.core.models.hub import quiet_open_clip
from biotrove_cli.core.models.loaded import LoadedModel


def eval_transform(model: Any) -> tuple[Any, dict[str, Any]]:
    """The model's inference preprocessing and its config (size, mean, std, resize mode...)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = open_clip.get_model_preprocess_cfg(model)
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False), dict(cfg)


def build_model(arch: str, quick_gelu: bool = False, device: str = "cpu") -> tuple[Any, dict]:
    """A randomly initialised open_clip model of ``arch`` and its model config."""
    registry.ensure_registered()
    import open_clip

    cfg = registry.arch_config(arch)
    if cfg is None:
        raise ModelLoadError(
            f"unknown architecture {arch!r}",
            hint="any name from open_clip.list_models(), or biotrove-tiny",
        )
    with quiet_open_clip():
        model = open_clip.create_model(
            arch, pretrained=None, device=device, force_quick_gelu=quick_gelu
        )
    if quick_gelu:
        cfg["quick_gelu"] = True
    return model, cfg


def _load_weights(model: Any, sd: dict[str, Any], source: str) -> None:
    """Load ``sd`` strictly, or say in one line what does not fit (and how many)."""
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    sd.pop("text.transformer.embeddings.position_ids", None)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad_shapes:
            parts.append(f"{len(bad_shapes)} with other shapes (e.g. {bad_shapes[0]})")
        raise ModelLoadError(
            f"{source}: the weights do not fit the architecture: " + ", ".join(parts),
            hint="pass --arch with the architecture the weights were trained as",
        )
    model.load_state_dict(sd, strict=True)


def check_finite(model: Any, name: str) -> None:
    """Refuse weights that hold NaN or infinity (a diverged run, a broken conversion): such a
    model scores every photo as noise, silently.

    Raises:
        NonFiniteError: naming the model and the first bad tensors.
    """
    import torch

    bad = []
    for pname, param in model.named_parameters():
        finite = torch.isfinite(param.detach())
        if not bool(finite.all()):
            bad.append((pname, int((~finite).sum()), param.numel()))
    if bad:
        shown = ", ".join(f"{n} ({k} of {total} values)" for n, k, total in bad[:3])
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise NonFiniteError(
            f"{name}: the model's weights are not finite (NaN or infinity in {shown}{more})",
            hint="the checkpoint is broken (a diverged training run, a bad conversion); use "
            "an earlier checkpoint or export it again",
        )


def finish_loading(
    model: Any, arch: str, cfg: dict, device: str, *, tokenizer: Any = None, **kwargs: Any
) -> LoadedModel:
    """A loaded open_clip model, in eval mode on ``device``, with its preprocessing and (unless
    given) the tokenizer of its architecture; ``kwargs`` are the other LoadedModel fields."""
    import open_clip

    spec, source = str(kwargs.get("spec") or arch), kwargs.get("source")
    check_finite(model, spec if source is None or str(source) == spec else f"{spec} ({source})")
    model.eval()
    model.to(device)
    preprocess, pcfg = eval_transform(model)
    if tokenizer is None:
        base = base_name(arch)
        tokenizer = open_clip.get_tokenizer(base if registry.arch_config(base) else arch)
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        arch=arch,
        quick_gelu=bool(cfg.get("quick_gelu", False)),
        model_cfg=cfg,
        preprocess_cfg=pcfg,
        **kwargs,
    )


def load_state_dict_model(
    sd: dict[str, Any],
    *,
    spec: str,
    kind: str,
    source: Path | None,
    arch: str | None,
    quick_gelu: bool | None,
    reason: str,
    device: str,
    **extra: Any,
) -> LoadedModel:
    """Build the right architecture for a state dict and load it (strict)."""
    if arch:
        explicit_q = arch.endswith("-quickgelu")
        q = bool(quick_gelu) or explicit_q
        name = quickgelu_name(arch) if q else arch
        model, cfg = build_model(name, quick_gelu=q, device="cpu")
        _load_weights(model, sd, str(source or spec))
        return finish_loading(
            model,
            name,
            cfg,
            device,
            spec=spec,
            kind=kind,
            source=source,
            arch_reason=reason,
            **extra,
        )
    candidates = infer_arch_candidates(sd)
    if not candidates:
        shapes = state_dict_shapes(sd)
        desc = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ModelLoadError(
            f"unknown architecture: no open_clip model has these shapes ({desc})",
            hint="pass --arch NAME if the model is an open_clip architecture",
        )
    last_error: ModelLoadError | None = None
    for cand in candidates:
        name = quickgelu_name(cand) if quick_gelu else cand
        try:
            model, cfg = build_model(name, quick_gelu=bool(quick_gelu), device="cpu")
            _load_weights(model, sd, str(source or spec))
        except ModelLoadError as exc:
            last_error = exc
            continue
        why = f"architecture {name} inferred from the weights' shapes; {reason}"
        return finish_loading(
            model, name, cfg, device, spec=spec, kind=kind, source=source, arch_reason=why, **extra
        )
    assert last_error is not None
    raise last_error
