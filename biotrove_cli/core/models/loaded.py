"""What :func:`load.load_model` returns: a model ready for inference, everything known about
where it came from, and the fingerprint that identifies its text embeddings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        """The identity of the text tower's output: weights, activation, config, tokenizer."""
        if self._fingerprint is None:
            self._fingerprint = text_tower_fingerprint(self.model, self.tokenizer, self.model_cfg)
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


#: Texts the tokenizer's fingerprint tokenizes: case, accents, punctuation, digits, and one
#: longer than any context (truncation).
_TOKENIZER_PROBES = (
    "a photo of Turdus merula, the Common Blackbird.",
    "ANIMALIA Chordata aves: Ærø façade, 'quoted' \"words\" & 12.5 cm (x2)!",
    " ".join(f"w{i}" for i in range(300)),
)


def text_tower_fingerprint(
    model: Any, tokenizer: Any = None, model_cfg: dict[str, Any] | None = None
) -> str:
    """A hash of everything that decides the text tower's output for a given text.

    * the weights: names and bytes of every non-visual parameter and buffer;
    * the structure: the type of every non-visual module (GELU against QuickGELU, the norm and
      attention classes), which the weights cannot show;
    * the model config, less the image tower's (width, heads, context length, pooling...);
    * the tokenizer: its class, context length and the tokens of a few probe texts (vocabulary,
      lower-casing, cleaning and truncation all show in them).
    """
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("visual.") or name in ("logit_scale", "logit_bias"):
            continue
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    for name, module in model.named_modules():
        if not name.startswith("visual"):
            h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__}\n".encode())
    cfg = {k: v for k, v in (model_cfg or {}).items() if k != "vision_cfg"}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    if tokenizer is not None:
        kind = type(tokenizer)
        h.update(f"{kind.__module__}.{kind.__qualname__}".encode())
        h.update(str(getattr(tokenizer, "context_length", "")).encode())
        tokens = tokenizer(list(_TOKENIZER_PROBES))
        h.update(torch.as_tensor(tokens).to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()
