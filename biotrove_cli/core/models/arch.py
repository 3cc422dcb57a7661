"""Architecture inference: the architecture-defining shapes of a bare state dict, the open_clip
architectures that match them, and which architecture and activation a checkpoint file gets.

QuickGELU cannot be seen in the weights: it comes from the source (the stored config, the
BioTrove preset, the bundle config, or ``arch=``), and the reason is recorded.
"""

from __future__ import annotations

import re
from typing import Any

from biotrove_cli.core.errors import ModelLoadError
from biotrove_cli.core.models import registry


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


def quickgelu_name(arch: str) -> str:
    """The QuickGELU variant of ``arch`` where open_clip has one, else its base name."""
    base = base_name(arch)
    q = f"{base}-quickgelu"
    return q if registry.arch_config(q) is not None else base


def base_name(arch: str) -> str:
    """``ViT-B-16-quickgelu`` -> ``ViT-B-16``."""
    return arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else arch


def decide_arch(
    filename: str,
    train_cfg: dict[str, Any] | None,
    *,
    arch: str | None = None,
    reason: str | None = None,
) -> tuple[str | None, bool, str]:
    """Which architecture and activation a checkpoint file gets, and why (no I/O).

    Precedence: an explicit ``arch`` (``--arch``; ``reason`` says why, when not from the flag),
    the checkpoint's stored training config, a published BioTrove-CLIP file name (its documented
    architecture, QuickGELU included), then none: the caller infers the architecture from the
    weights' shapes, with QuickGELU off (the weights cannot tell).

    Returns:
        (architecture or None to infer it, QuickGELU, the reason in words)
    """
    stored = (train_cfg.get("model") or {}) if train_cfg else {}
    preset = registry.preset_for_filename(filename)
    if arch:
        return arch, arch.endswith("-quickgelu"), reason or f"architecture {arch} from --arch"
    if stored.get("arch"):
        arch = stored["arch"]
        q = bool(stored.get("quick_gelu")) or arch.endswith("-quickgelu")
        return arch, q, f"architecture {arch} from the checkpoint's stored training config"
    if preset is not None:
        why = (
            f"{preset.title} file name: documented as {preset.arch}"
            f"{' (QuickGELU, OpenAI/MetaCLIP-initialised)' if preset.quick_gelu else ''}"
        )
        return preset.arch, preset.quick_gelu, why
    return (
        None,
        False,
        "QuickGELU off: the checkpoint does not record its activation; pass --arch "
        "ARCH-quickgelu for OpenAI-initialised weights",
    )
