"""The open_clip format: ``open_clip_config.json`` + ``open_clip_model.safetensors``, which stock
``open_clip.create_model_and_transforms("local-dir:DIR")`` loads with no biotrove installed (the
architecture config, QuickGELU included, travels in the JSON). No optimizer state, no pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biotrove_cli.core.fmt import plain
from biotrove_cli.core.layout import BUNDLE_CONFIG, BUNDLE_WEIGHTS
from biotrove_cli.core.models.export.config import Dtype


def _torch_dtype(dtype: Dtype):
    import torch

    return {Dtype.fp32: torch.float32, Dtype.fp16: torch.float16, Dtype.bf16: torch.bfloat16}[dtype]


def _write_open_clip(tmp: Path, source: Any, dtype: Dtype) -> None:
    """open_clip_config.json + open_clip_model.safetensors (+ HF tokenizer files if any)."""
    from safetensors.torch import save_file

    from biotrove_cli.core.io import atomic_write_json

    tdtype = _torch_dtype(dtype)
    tensors = {}
    for name, t in source.model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(tdtype)
        tensors[name] = t.contiguous()
    save_file(tensors, str(tmp / BUNDLE_WEIGHTS), metadata={"format": "pt"})
    del tensors
    model_cfg = plain(dict(source.model_cfg), strict=True)
    model_cfg["quick_gelu"] = bool(source.quick_gelu)
    pcfg = {
        k: v
        for k, v in plain(dict(source.preprocess_cfg), strict=True).items()
        if k in ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
    }
    atomic_write_json(tmp / BUNDLE_CONFIG, {"model_cfg": model_cfg, "preprocess_cfg": pcfg})
    text_cfg = model_cfg.get("text_cfg") or {}
    if text_cfg.get("hf_tokenizer_name") and hasattr(source.tokenizer, "save_pretrained"):
        # open_clip's local-dir loader reads an HF tokenizer from the folder itself
        source.tokenizer.save_pretrained(str(tmp))
