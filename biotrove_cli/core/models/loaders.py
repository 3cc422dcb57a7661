"""The loaders, one per kind of model source (:class:`spec.SpecKind`): an exported bundle, a run
folder, a checkpoint file (``.pt`` or ``.safetensors``), a BioTrove-CLIP preset, open_clip random
weights or a pretrained tag, and a ``hf-hub:`` repository.

Checkpoint loading is weights-only (see :mod:`checkpoint`). The architecture of a bare state dict
is inferred from its tensor shapes (see :mod:`arch`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import ModelLoadError
from biotrove_cli.core.layout import (
    BUNDLE_CONFIG,
    BUNDLE_EMBEDDINGS,
    BUNDLE_LABELS,
    BUNDLE_META,
    BUNDLE_WEIGHTS,
    RUN_LABELS,
)
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.arch import decide_arch
from biotrove_cli.core.models.build import build_model, finish_loading, load_state_dict_model
from biotrove_cli.core.models.checkpoint import (
    extract_state_dict,
    plain_reason,
    resolve_latest,
    safe_load,
)
from biotrove_cli.core.models.hub import (
    offline_hint,
    offline_unless_reachable,
    quiet_open_clip,
    why_unavailable,
)
from biotrove_cli.core.models.loaded import LoadedModel

log = logging.getLogger("biotrove")


def load_bundle(path: Path, spec: str, device: str) -> LoadedModel:
    """An exported folder: open_clip's own ``local-dir:`` loader, plus biotrove extras."""
    registry.ensure_registered()
    import open_clip

    try:
        meta = (
            json.loads((path / BUNDLE_META).read_text()) if (path / BUNDLE_META).is_file() else {}
        )
        config = json.loads((path / BUNDLE_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{path}: unreadable bundle config ({exc})",
            hint="export the model again with `biotrove export`",
        ) from exc
    weights = [
        p
        for p in path.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pth") and p.name != BUNDLE_EMBEDDINGS
    ]
    if not weights:
        raise ModelLoadError(
            f"{path}: the bundle has a config but no weights file",
            hint=f"expected {BUNDLE_WEIGHTS}; export the model again",
        )
    for w in weights:
        if w.suffix != ".safetensors":
            # a pickled weights file goes through biotrove's weights-only loader first, so an
            # unsafe or broken one is refused with its plain reason (not torch's advice)
            safe_load(w)
    _check_config_hash(path, meta)
    try:
        with quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{path}", device="cpu")
    except Exception as exc:  # open_clip raises many kinds here
        raise ModelLoadError(
            f"{path}: the bundle does not load ({plain_reason(exc)})",
            hint="export the model again with `biotrove export`",
        ) from exc
    cfg = config.get("model_cfg", {})
    arch = meta.get("arch") or "local-dir"
    labels = None
    class_emb = None
    if (path / BUNDLE_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        labels = LabelBank.load(path / BUNDLE_LABELS)
        if (path / BUNDLE_EMBEDDINGS).is_file():
            class_emb = load_class_embeddings(path / BUNDLE_EMBEDDINGS)
    return finish_loading(
        model,
        arch,
        cfg,
        device,
        tokenizer=open_clip.get_tokenizer(f"local-dir:{path}"),
        spec=spec,
        kind="bundle",
        arch_reason=f"read from the bundle's {BUNDLE_CONFIG}",
        source=path,
        labels=labels,
        class_embeddings=class_emb,
        train_config=meta.get("training_config"),
        checkpoint_meta=meta,
    )


def _check_config_hash(path: Path, meta: dict[str, Any]) -> None:
    """Warn when ``open_clip_config.json`` differs from the one ``biotrove export`` wrote (its
    sha256 is in ``biotrove.json``): an edited mean/std or image size changes every score."""
    from biotrove_cli.core.io import sha256_file

    recorded = meta.get("config_sha256")
    if not recorded:
        return  # not a biotrove export, or one from before the hash was recorded
    if sha256_file(path / BUNDLE_CONFIG) != recorded:
        log.warning(
            f"{path / BUNDLE_CONFIG} was changed after export (its sha256 differs from the one "
            f"{BUNDLE_META} records); the model is loaded with the changed config, so its "
            "scores may differ from the exported model's: export it again to be sure"
        )


def load_class_embeddings(path: Path, framework: str = "pt") -> dict[str, Any]:
    """A bundle's precomputed class text embeddings and their metadata (the prompts key), as
    torch tensors (``pt``) or numpy arrays (``numpy``: the ONNX backend)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework=framework) as f:
            meta = f.metadata() or {}
            emb = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: unreadable class embeddings ({exc})", hint="export the bundle again"
        ) from exc
    return {"tensors": emb, "meta": meta}


def load_checkpoint_file(
    path: Path,
    spec: str,
    device: str,
    arch: str | None,
    kind: str = "checkpoint",
    reason: str | None = None,
    extra: dict | None = None,
) -> LoadedModel:
    """A ``.pt`` training checkpoint (open_clip or biotrove) or a bare state dict.

    Args:
        arch: the architecture to load it into (``--arch``); None decides from the file.
        kind: the kind the loaded model reports (a run's checkpoint says ``run``).
        reason: why ``arch`` (recorded instead of "from --arch").
        extra: more :class:`LoadedModel` fields (a run's label bank).
    """
    obj = safe_load(path)
    sd = extract_state_dict(obj, source=str(path))
    meta: dict[str, Any] = {}
    train_cfg = None
    if isinstance(obj, dict):
        meta = {k: obj[k] for k in ("epoch", "step", "name", "biotrove_version") if k in obj}
        if isinstance(obj.get("config"), dict):
            train_cfg = obj["config"]
    arch, q, why = decide_arch(path.name, train_cfg, arch=arch, reason=reason)
    return load_state_dict_model(
        sd,
        spec=spec,
        kind=kind,
        source=path,
        arch=arch,
        quick_gelu=q,
        reason=why,
        device=device,
        train_config=train_cfg,
        checkpoint_meta=meta,
        **(extra or {}),
    )


def load_safetensors(path: Path, spec: str, device: str, arch: str | None) -> LoadedModel:
    """A ``.safetensors`` file: the bundle around it, or bare weights (``arch`` or inferred)."""
    if (path.parent / BUNDLE_CONFIG).is_file():
        return load_bundle(path.parent, spec, device)
    from safetensors.torch import load_file

    try:
        sd = load_file(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path}: unreadable safetensors file ({exc})") from exc
    return load_state_dict_model(
        extract_state_dict(sd, str(path)),
        spec=spec,
        kind="checkpoint",
        source=path,
        arch=arch,
        quick_gelu=None,
        reason="QuickGELU off unless --arch says so",
        device=device,
    )


def load_run_dir(path: Path, spec: str, device: str, arch: str | None) -> LoadedModel:
    """A run folder: its newest complete checkpoint, with the run's label bank."""
    ckpt = resolve_latest(path)
    if ckpt is None:
        raise ModelLoadError(
            f"{path}: the run has no complete checkpoint yet",
            hint=f"train it with `biotrove train --run-dir {path} ...` "
            "or pass --model with a checkpoint",
        )
    extra: dict[str, Any] = {}
    if (path / RUN_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        extra["labels"] = LabelBank.load(path / RUN_LABELS)
    return load_checkpoint_file(ckpt, spec, device, arch, kind="run", extra=extra)


def require_arch(arch: str, spec: str) -> None:
    """Refuse an ``ARCH:...`` spec whose architecture open_clip does not know."""
    if registry.arch_config(arch) is None:
        raise ModelLoadError(
            f"unknown open_clip architecture {arch!r} in {spec!r}",
            hint="open_clip.list_models() lists the names; e.g. ViT-B-16:openai",
        )


def load_random(arch: str, tag: str, spec: str, device: str) -> LoadedModel:
    """``ARCH:random``: random weights (benchmarks, smoke tests)."""
    require_arch(arch, spec)
    model, cfg = build_model(arch, device="cpu")
    return finish_loading(
        model,
        arch,
        cfg,
        device,
        spec=spec,
        kind="random",
        source=None,
        arch_reason=f"{arch} with random weights ({tag})",
    )


def load_arch_file(arch: str, path: Path, spec: str, device: str) -> LoadedModel:
    """``ARCH:/path/to/file.pt``: a checkpoint file loaded into a named architecture."""
    require_arch(arch, spec)
    return load_checkpoint_file(
        path, spec, device, arch, reason=f"architecture {arch} named in the spec"
    )


def load_pretrained(arch: str, tag: str, spec: str, device: str) -> LoadedModel:
    """``ARCH:TAG``: open_clip pretrained weights, from the local cache only when offline."""
    require_arch(arch, spec)
    import open_clip

    if not open_clip.get_pretrained_cfg(arch, tag):
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelLoadError(
            f"{arch} has no pretrained tag {tag!r}",
            hint=f"tags: {', '.join(tags) or '(none)'}; or ARCH:random, "
            "or ARCH:/path/to/weights.pt",
        )
    try:
        with quiet_open_clip(), offline_unless_reachable():
            model = open_clip.create_model(arch, pretrained=tag, device="cpu")
    except Exception as exc:
        log.debug("open_clip could not load %s: %s", spec, exc)
        raise ModelLoadError(
            f"cannot load pretrained weights {spec!r}: {why_unavailable()}",
            hint=offline_hint(f"the {arch}:{tag} weights"),
        ) from exc
    cfg = registry.arch_config(arch) or {}
    q = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", cfg.get("quick_gelu")))
    cfg["quick_gelu"] = bool(cfg.get("quick_gelu")) or q
    return finish_loading(
        model,
        arch,
        cfg,
        device,
        spec=spec,
        kind="pretrained",
        source=None,
        arch_reason=f"open_clip pretrained tag {arch}:{tag}",
    )


def load_hf_hub(spec: str, device: str) -> LoadedModel:
    """``hf-hub:org/repo``: open_clip's hub loader, from the local cache only when offline."""
    import open_clip

    try:
        with quiet_open_clip(), offline_unless_reachable():
            model = open_clip.create_model(spec, device="cpu")
            tokenizer = open_clip.get_tokenizer(spec)
            cfg = open_clip.get_model_config(spec) or {}
    except Exception as exc:
        log.debug("open_clip could not load %s: %s", spec, exc)
        raise ModelLoadError(
            f"cannot load {spec!r}: {why_unavailable()}",
            hint=offline_hint(spec),
        ) from exc
    return finish_loading(
        model,
        spec,
        cfg,
        device,
        tokenizer=tokenizer,
        spec=spec,
        kind="hf-hub",
        arch_reason="read from the hub repository's open_clip_config.json",
    )
