"""``biotrove info`` of a checkpoint file or an exported bundle."""

from __future__ import annotations

from pathlib import Path

from biotrove_cli.core.errors import InputError
from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.inspect.report import Report


def describe_checkpoint(path: Path) -> Report:
    from biotrove_cli.core.models.arch import infer_arch_candidates, state_dict_shapes
    from biotrove_cli.core.models.checkpoint import extract_state_dict, safe_load

    obj = safe_load(path)
    sd = extract_state_dict(obj, str(path))
    rep = Report("checkpoint", f"{path.name}: checkpoint")
    rep.add("file", "size", human_size(path.stat().st_size))
    n_params = sum(int(v.numel()) for v in sd.values())
    rep.add("weights", "tensors", len(sd))
    rep.add("weights", "parameters", n_params)
    try:
        shapes = state_dict_shapes(sd)
        for k, v in shapes.items():
            rep.add("architecture", k, v)
        rep.add("architecture", "matches", ", ".join(infer_arch_candidates(sd)) or "(none)")
    except InputError:
        raise
    except Exception as exc:  # not a ViT CLIP: say so, still describe the file
        rep.add("architecture", "matches", f"unknown ({exc})")
    if isinstance(obj, dict):
        for key in ("epoch", "step", "name", "biotrove_version"):
            if key in obj:
                rep.add("checkpoint", key, obj[key])
        rep.add("checkpoint", "optimizer state", "optimizer" in obj)
        cfg = obj.get("config")
        if isinstance(cfg, dict):
            rep.add("checkpoint", "arch (stored config)", (cfg.get("model") or {}).get("arch"))
    rep.document = {"parameters": n_params}
    return rep


def describe_bundle(path: Path) -> Report:

    from biotrove_cli.core.layout import (
        BUNDLE_CONFIG,
        BUNDLE_EMBEDDINGS,
        BUNDLE_LABELS,
        BUNDLE_META,
        ONNX_CONFIG,
    )

    onnx = not (path / BUNDLE_CONFIG).is_file()
    rep = Report("bundle", f"{path.name}: exported model ({'ONNX' if onnx else 'open_clip'})")
    cfg = _json_object(path / (ONNX_CONFIG if onnx else BUNDLE_CONFIG))
    meta = _json_object(path / BUNDLE_META) if (path / BUNDLE_META).is_file() else {}
    for key in (
        "arch",
        "quick_gelu",
        "dtype",
        "source",
        "source_sha256",
        "biotrove_version",
        "created",
    ):
        if key in meta:
            rep.add("bundle", key, meta[key])
    if meta.get("config_sha256") and not onnx:
        from biotrove_cli.core.io import sha256_file

        same = sha256_file(path / BUNDLE_CONFIG) == meta["config_sha256"]
        rep.add("bundle", BUNDLE_CONFIG, "as exported" if same else "edited after export")
    if onnx:
        quant = cfg.get("quantization") or {}
        rep.add("onnx", "image encoder", f"int8 ({quant.get('method')})" if quant else "fp32")
        agreement = (meta.get("verification") or {}).get("agreement")
        if agreement is not None:
            rep.add("onnx", "top-1 agreement with fp32", f"{agreement:.4f}")
        rep.add("onnx", "tokenizer", "bundled" if cfg.get("tokenizer") else "none")
    mc = cfg.get("model_cfg", {})
    rep.add("model", "embed_dim", mc.get("embed_dim"))
    rep.add("model", "image_size", mc.get("vision_cfg", {}).get("image_size"))
    for f in sorted(path.iterdir()):
        if f.is_file():
            rep.add("files", f.name, human_size(f.stat().st_size))
    if (path / BUNDLE_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        bank = LabelBank.load(path / BUNDLE_LABELS)
        rep.add("labels", "classes", len(bank))
        rep.add("labels", "precomputed embeddings", (path / BUNDLE_EMBEDDINGS).is_file())
    rep.document = {"bundle": meta}
    return rep


def _json_object(path: Path) -> dict:
    """A bundle's JSON file, which must hold an object (a clear error when it does not)."""
    from biotrove_cli.core.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a JSON object, found {type(data).__name__}",
            hint="the file was edited; export the model again with `biotrove export`",
        )
    return data
