"""What :func:`load.load_model` returns: a model ready for inference, everything known about
where it came from, and the fingerprint that identifies its text embeddings."""

from __future__ import annotations

import hashlib
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
