"""``load_model(spec)``: one entry point for every way a user names a model.

Accepted specs, tried in this order:

1. an exported bundle folder (``open_clip_config.json`` + weights, from ``biotrove export``);
2. a biotrove run folder (its latest complete checkpoint, config and label bank);
3. a checkpoint file (``.pt``/``.pth``/``.bin``: open_clip training checkpoints with or without
   ``module.`` prefixes, optimizer state ignored; ``.safetensors`` beside a config or with
   ``arch=``);
4. a BioTrove-CLIP model by preset (``clip-o``, ``clip-b``, ``clip-m``) or published file name,
   looked up in :func:`registry.models_dir` (``$BIOTROVE_HOME/models``);
5. ``hf-hub:org/repo`` and open_clip ``ARCH:TAG`` pretrained tags, from the local cache only
   when offline; ``ARCH:random`` builds random weights (benchmarks, smoke tests);
6. ``ARCH:/path/to/file.pt`` loads a file into a named architecture.

Checkpoint loading is weights-only (see :mod:`checkpoint`). The architecture of a bare state dict
is inferred from its tensor shapes; QuickGELU comes from the source (the stored config, the
BioTrove preset, the bundle config, or ``arch=``), and the reason is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, ModelLoadError, UsageError
from biotrove_cli.core.models import registry
from biotrove_cli.core.models.checkpoint import extract_state_dict, resolve_latest, safe_load

log = logging.getLogger("biotrove")

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
BUNDLE_CONFIG = "open_clip_config.json"
BUNDLE_WEIGHTS = "open_clip_model.safetensors"
BUNDLE_META = "biotrove.json"
BUNDLE_LABELS = "labels.parquet"
BUNDLE_EMBEDDINGS = "class_embeddings.safetensors"
RUN_CONFIG = "config.yaml"
RUN_LABELS = "labels.parquet"


@dataclass
class LoadedModel:
    """A model ready for inference, and everything known about where it came from."""

    model: Any
    preprocess: Any
    tokenizer: Any
    arch: str
    quick_gelu: bool
    spec: str
    kind: str
    arch_reason: str
    source: Path | None = None
    labels: Any = None  # LabelBank shipped with a bundle or run
    class_embeddings: dict[str, Any] | None = None  # precomputed by export --labels
    train_config: dict[str, Any] | None = None
    model_cfg: dict[str, Any] = field(default_factory=dict)
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)
    checkpoint_meta: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = None

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.get("size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def context_length(self) -> int:
        return int(self.model_cfg.get("text_cfg", {}).get("context_length", 77))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def text_fingerprint(self) -> str:
        """A hash of the text tower's weights: the identity of its text embeddings."""
        if self._fingerprint is None:
            self._fingerprint = text_tower_fingerprint(self.model)
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "arch": self.arch,
            "quick_gelu": self.quick_gelu,
            "arch_reason": self.arch_reason,
            "source": str(self.source) if self.source else None,
            "image_size": self.image_size,
            "labels": len(self.labels) if self.labels is not None else 0,
        }


def text_tower_fingerprint(model: Any) -> str:
    """blake2b over the names and bytes of every non-visual parameter and buffer."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("visual.") or name in ("logit_scale", "logit_bias"):
            continue
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """open_clip and huggingface_hub log on their own (download retries, "initialized
    randomly"); biotrove reports problems itself, so mute them meanwhile."""
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def network_available(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers at all: saves a minute of hub retries on an offline machine."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Run hub lookups from the local cache only when the hub cannot be reached."""
    if network_available():
        yield
        return
    import huggingface_hub.constants as hf_constants

    saved_env = os.environ.get("HF_HUB_OFFLINE")
    saved_const = hf_constants.HF_HUB_OFFLINE  # read at import time, so patch it too
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


# -- architecture inference ------------------------------------------------------------------
def state_dict_shapes(sd: dict[str, Any]) -> dict[str, Any]:
    """The architecture-defining numbers of a CLIP state dict (ViT image tower)."""
    try:
        conv = sd["visual.conv1.weight"]
        pos = sd["visual.positional_embedding"]
        tok = sd["token_embedding.weight"]
        tpos = sd["positional_embedding"]
        tproj = sd["text_projection"]
    except KeyError as exc:
        raise ModelLoadError(
            f"unknown architecture: the weights lack {exc.args[0]!r}, so they are not an "
            "open_clip ViT CLIP",
            hint="pass --arch NAME (any open_clip architecture) to load them into that model",
        ) from None

    def layers(prefix: str) -> int:
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({int(m.group(1)) for k in sd for m in [pat.match(k)] if m})

    patch = int(conv.shape[-1])
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    embed_dim = int(tproj.shape[1]) if tproj.ndim == 2 else int(tproj.shape[0])
    return {
        "embed_dim": embed_dim,
        "vision_width": int(conv.shape[0]),
        "vision_layers": layers("visual.transformer.resblocks."),
        "patch_size": patch,
        "image_size": grid * patch,
        "text_width": int(tok.shape[1]),
        "vocab_size": int(tok.shape[0]),
        "context_length": int(tpos.shape[0]),
        "text_layers": layers("transformer.resblocks."),
    }


def _config_shapes(cfg: dict[str, Any]) -> dict[str, Any] | None:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in v or "hf_model_name" in t or not isinstance(v.get("layers"), int):
        return None
    image_size = v.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    return {
        "embed_dim": cfg.get("embed_dim"),
        "vision_width": v.get("width", 768),
        "vision_layers": v.get("layers"),
        "patch_size": v.get("patch_size", 16),
        "image_size": image_size,
        "text_width": t.get("width", 512),
        "vocab_size": t.get("vocab_size", 49408),
        "context_length": t.get("context_length", 77),
        "text_layers": t.get("layers", 12),
    }


def infer_arch_candidates(sd: dict[str, Any]) -> list[str]:
    """open_clip architectures whose shapes match the state dict, simplest names first."""
    registry.ensure_registered()
    from open_clip.factory import _MODEL_CONFIGS

    want = state_dict_shapes(sd)
    names = []
    for name, cfg in list(_MODEL_CONFIGS.items()):
        shapes = _config_shapes(cfg)
        if shapes == want and not name.endswith("-quickgelu"):
            names.append(name)
    names.sort(key=lambda n: (n.count("-"), len(n), n))
    return names


def _quickgelu_name(arch: str) -> str:
    base = arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else arch
    q = f"{base}-quickgelu"
    return q if registry.arch_config(q) is not None else base


def _base_name(arch: str) -> str:
    return arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else arch


# -- building ----------------------------------------------------------------------------------
def _transforms(model: Any):
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


def _finish(model: Any, arch: str, cfg: dict, device: str, **kwargs: Any) -> LoadedModel:
    import open_clip

    model.eval()
    model.to(device)
    preprocess, pcfg = _transforms(model)
    tokenizer = open_clip.get_tokenizer(
        _base_name(arch) if registry.arch_config(_base_name(arch)) else arch
    )
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
        name = _quickgelu_name(arch) if q else arch
        model, cfg = build_model(name, quick_gelu=q, device="cpu")
        _load_weights(model, sd, str(source or spec))
        return _finish(
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
        name = _quickgelu_name(cand) if quick_gelu else cand
        try:
            model, cfg = build_model(name, quick_gelu=bool(quick_gelu), device="cpu")
            _load_weights(model, sd, str(source or spec))
        except ModelLoadError as exc:
            last_error = exc
            continue
        why = f"architecture {name} inferred from the weights' shapes; {reason}"
        return _finish(
            model, name, cfg, device, spec=spec, kind=kind, source=source, arch_reason=why, **extra
        )
    assert last_error is not None
    raise last_error


# -- the sources ---------------------------------------------------------------------------------
def _is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / BUNDLE_CONFIG).is_file()


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "checkpoints").is_dir() or (path / RUN_CONFIG).is_file())


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
    try:
        with quiet_open_clip():
            model = open_clip.create_model(f"local-dir:{path}", device="cpu")
    except Exception as exc:  # open_clip raises many kinds here
        raise ModelLoadError(
            f"{path}: the bundle does not load ({exc})",
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
    import open_clip as oc

    model.eval().to(device)
    preprocess, pcfg = _transforms(model)
    tokenizer = oc.get_tokenizer(f"local-dir:{path}")
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        arch=arch,
        quick_gelu=bool(cfg.get("quick_gelu", False)),
        spec=spec,
        kind="bundle",
        arch_reason=f"read from the bundle's {BUNDLE_CONFIG}",
        source=path,
        labels=labels,
        class_embeddings=class_emb,
        train_config=meta.get("training_config"),
        model_cfg=cfg,
        preprocess_cfg=pcfg,
        checkpoint_meta=meta,
    )


def load_class_embeddings(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            emb = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: unreadable class embeddings ({exc})", hint="export the bundle again"
        ) from exc
    return {"tensors": emb, "meta": meta}


def decide_arch(
    filename: str,
    train_cfg: dict[str, Any] | None,
    *,
    arch: str | None = None,
    quick_gelu: bool | None = None,
    reason: str | None = None,
) -> tuple[str | None, bool, str]:
    """Which architecture and activation a checkpoint file gets, and why (no I/O).

    Precedence: an explicit ``arch`` (``--arch``), the checkpoint's stored training config, a
    published BioTrove-CLIP file name (its documented architecture, QuickGELU included), then
    none: the caller infers the architecture from the weights' shapes, QuickGELU off unless
    ``quick_gelu`` says otherwise.

    Returns:
        (architecture or None to infer it, QuickGELU, the reason in words)
    """
    stored_arch = None
    if train_cfg:
        stored_arch = (train_cfg.get("model") or {}).get("arch")
    preset = registry.preset_for_filename(filename)
    if arch:
        why = reason or f"architecture {arch} from --arch"
        q = arch.endswith("-quickgelu") if quick_gelu is None else quick_gelu
    elif stored_arch:
        assert train_cfg is not None
        arch = stored_arch
        q = bool((train_cfg.get("model") or {}).get("quick_gelu")) or arch.endswith("-quickgelu")
        why = f"architecture {arch} from the checkpoint's stored training config"
    elif preset is not None:
        arch = preset.arch
        q = preset.quick_gelu
        why = (
            f"{preset.title} file name: documented as {preset.arch}"
            f"{' (QuickGELU, OpenAI/MetaCLIP-initialised)' if q else ''}"
        )
    else:
        q = bool(quick_gelu)
        why = reason or (
            "QuickGELU "
            + (
                "on"
                if q
                else "off: the checkpoint does not record its "
                "activation; pass --arch ARCH-quickgelu for OpenAI-initialised weights"
            )
        )
    return arch, bool(q), why


def load_checkpoint_file(
    path: Path,
    spec: str,
    device: str,
    arch: str | None,
    kind: str = "checkpoint",
    quick_gelu: bool | None = None,
    reason: str | None = None,
    extra: dict | None = None,
) -> LoadedModel:
    """A ``.pt`` training checkpoint (open_clip or biotrove) or a bare state dict."""
    obj = safe_load(path)
    sd = extract_state_dict(obj, source=str(path))
    meta: dict[str, Any] = {}
    train_cfg = None
    if isinstance(obj, dict):
        meta = {k: obj[k] for k in ("epoch", "step", "name", "biotrove_version") if k in obj}
        if isinstance(obj.get("config"), dict):
            train_cfg = obj["config"]
    arch, q, why = decide_arch(
        path.name, train_cfg, arch=arch, quick_gelu=quick_gelu, reason=reason
    )
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


def load_run_dir(path: Path, spec: str, device: str, arch: str | None) -> LoadedModel:
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


def _why_unavailable() -> str:
    if network_available():
        return "the download failed (-v shows open_clip's error)"
    return "not in the local cache, and the model hub cannot be reached (offline)"


def _offline_hint(what: str) -> str:
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"{what} must already be in the local cache when offline ({hub}/hub for Hugging Face "
        "files, ~/.cache/clip for open_clip URL downloads): fetch it once on a machine with "
        "network (e.g. `python -c \"import open_clip; open_clip.create_model('ARCH', "
        "pretrained='TAG')\"`) and copy the cache folder over"
    )


def load_pretrained(arch: str, tag: str, spec: str, device: str) -> LoadedModel:
    registry.ensure_registered()
    import open_clip

    if registry.arch_config(arch) is None:
        raise ModelLoadError(
            f"unknown open_clip architecture {arch!r} in {spec!r}",
            hint="open_clip.list_models() lists the names; e.g. ViT-B-16:openai",
        )
    if tag.lower() in ("random", "none", "scratch"):
        model, cfg = build_model(arch, device="cpu")
        return _finish(
            model,
            arch,
            cfg,
            device,
            spec=spec,
            kind="random",
            source=None,
            arch_reason=f"{arch} with random weights ({tag})",
        )
    if os.path.isfile(tag):
        return load_checkpoint_file(
            Path(tag), spec, device, arch, reason=f"architecture {arch} named in the spec"
        )
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
            f"cannot load pretrained weights {spec!r}: {_why_unavailable()}",
            hint=_offline_hint(f"the {arch}:{tag} weights"),
        ) from exc
    cfg = registry.arch_config(arch) or {}
    q = bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", cfg.get("quick_gelu")))
    cfg["quick_gelu"] = bool(cfg.get("quick_gelu")) or q
    return _finish(
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
    import open_clip

    try:
        with quiet_open_clip(), offline_unless_reachable():
            model = open_clip.create_model(spec, device="cpu")
            tokenizer = open_clip.get_tokenizer(spec)
            cfg = open_clip.get_model_config(spec) or {}
    except Exception as exc:
        log.debug("open_clip could not load %s: %s", spec, exc)
        raise ModelLoadError(
            f"cannot load {spec!r}: {_why_unavailable()}",
            hint=_offline_hint(spec),
        ) from exc
    model.eval().to(device)
    preprocess, pcfg = _transforms(model)
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        arch=spec,
        quick_gelu=bool(cfg.get("quick_gelu", False)),
        spec=spec,
        kind="hf-hub",
        arch_reason="read from the hub repository's open_clip_config.json",
        model_cfg=cfg,
        preprocess_cfg=pcfg,
    )


def load_model(spec: str | Path, *, arch: str | None = None, device: str = "cpu") -> LoadedModel:
    """Load any model a user can name (see the module docstring), ready for inference.

    Raises:
        ModelLoadError (and subclasses): with a hint naming what to do next.
    """
    spec_str = str(spec).strip()
    if not spec_str:
        raise UsageError("no model given", hint="pass --model (a checkpoint, folder or tag)")
    path = Path(spec_str).expanduser()
    if path.exists():
        if _is_bundle(path):
            return load_bundle(path, spec_str, device)
        if _is_run_dir(path):
            return load_run_dir(path, spec_str, device, arch)
        if path.is_dir() and (path / "onnx_config.json").is_file():
            raise InputError(
                f"{path}: an ONNX export, for runtimes without PyTorch",
                hint="load its .onnx files with onnxruntime (see the README); biotrove commands "
                "take the open_clip export (biotrove export --format open_clip)",
            )
        if path.is_dir():
            raise InputError(
                f"{path}: is neither an exported model folder nor a run folder",
                hint=f"a bundle holds {BUNDLE_CONFIG}; a run holds checkpoints/",
            )
        if path.suffix == ".safetensors":
            return _load_safetensors(path, spec_str, device, arch)
        return load_checkpoint_file(path, spec_str, device, arch)
    if spec_str.startswith("hf-hub:"):
        return load_hf_hub(spec_str, device)
    if spec_str.startswith("local-dir:"):
        return load_model(spec_str[len("local-dir:") :], arch=arch, device=device)
    preset = registry.BIOTROVE_MODELS.get(spec_str.lower()) or registry.preset_for_filename(
        spec_str
    )
    if preset is not None:
        candidate = registry.models_dir() / preset.filename
        if candidate.is_file():
            return load_checkpoint_file(candidate, spec_str, device, arch)
        raise ModelLoadError(
            f"{preset.title} weights not found: {candidate} does not exist",
            hint=f"download {preset.filename} from {registry.HF_BIOTROVE} on a machine with "
            f"network and place it in {registry.models_dir()} (or set BIOTROVE_HOME)",
        )
    if ":" in spec_str and not spec_str.startswith((".", "/")):
        name, tag = spec_str.split(":", 1)
        return load_pretrained(name, tag, spec_str, device)
    if registry.arch_config(spec_str) is not None:
        raise UsageError(
            f"{spec_str!r} names an architecture, not weights",
            hint=f"use {spec_str}:TAG for pretrained weights (e.g. ViT-B-16:openai), "
            f"{spec_str}:random for random ones, or a checkpoint file",
        )
    looks_like_path = (
        any(c in spec_str for c in "/\\") or Path(spec_str).suffix in CHECKPOINT_SUFFIXES
    )
    raise InputError(
        f"{spec_str}: "
        + (
            "no such file or folder"
            if looks_like_path
            else "not a file, a folder, a BioTrove-CLIP model or an open_clip tag"
        ),
        hint="pass a checkpoint (.pt), an exported folder, a run folder, clip-o/clip-b/clip-m, "
        "hf-hub:org/repo or ARCH:TAG (e.g. ViT-B-16:openai)",
    )


def _load_safetensors(path: Path, spec: str, device: str, arch: str | None) -> LoadedModel:
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
