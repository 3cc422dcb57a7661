"""An ONNX bundle loaded for inference: :class:`OnnxModel`, what :func:`load.load_model` returns
for a folder written by ``biotrove export --format onnx``.

It offers what the engine uses of a :class:`~biotrove_cli.core.models.loaded.LoadedModel`
(preprocessing, tokenizer, label bank, bundled class embeddings, sizes, ``describe()``,
``text_fingerprint()``) with ``backend = "onnx"``: images and texts go through onnxruntime
sessions and come back as numpy arrays. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import ModelLoadError
from biotrove_cli.core.layout import (
    BUNDLE_EMBEDDINGS,
    BUNDLE_LABELS,
    BUNDLE_META,
    ONNX_CONFIG,
    ONNX_IMAGE,
    ONNX_TEXT,
)
from biotrove_cli.core.models.onnx.preprocess import NumpyPreprocess

log = logging.getLogger("biotrove")

#: Where the export puts the tokenizer's BPE merges, inside the bundle.
TOKENIZER_DIR = "tokenizer"


def require_onnxruntime(what: str) -> Any:
    """``import onnxruntime``, or a clear error naming the install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelLoadError(
            f"{what} runs on onnxruntime, which is not installed",
            hint="pip install onnxruntime (or 'biotrove[onnx]')",
        ) from exc
    return onnxruntime


def session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over ``path``, with all graph optimisations."""
    ort = require_onnxruntime(f"the ONNX bundle {path.parent}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(
            f"{path}: onnxruntime cannot load it ({first[:300]})",
            hint="export the model again with `biotrove export --format onnx`",
        ) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: unreadable ({exc})", hint="export the model again with `biotrove export`"
        ) from exc
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: not a JSON object", hint="export the model again")
    return value


@dataclass
class OnnxModel:
    """An ONNX bundle ready for inference (onnxruntime on the CPU)."""

    path: Path
    spec: str
    config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    labels: Any = None
    class_embeddings: dict[str, Any] | None = None
    backend: str = "onnx"
    kind: str = "onnx"
    device: str = "cpu"
    model: Any = None  # no PyTorch module
    train_config: dict[str, Any] | None = None
    _tokenizer: Any = None
    _text_session: Any = None

    def __post_init__(self) -> None:
        self.preprocess = NumpyPreprocess(self.preprocess_cfg)
        self.train_config = self.meta.get("training_config")

    # -- what the engine reads of a loaded model ----------------------------------------------
    @property
    def arch(self) -> str:
        return str(self.meta.get("arch") or self.config.get("arch") or "onnx")

    @property
    def quick_gelu(self) -> bool:
        return bool(self.meta.get("quick_gelu", False))

    @property
    def arch_reason(self) -> str:
        return f"read from the ONNX bundle's {ONNX_CONFIG}"

    @property
    def source(self) -> Path:
        return self.path

    @property
    def model_cfg(self) -> dict[str, Any]:
        cfg = dict(self.config.get("model_cfg") or {})
        cfg.setdefault("embed_dim", self.config.get("embed_dim"))
        return cfg

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        return dict(self.config.get("preprocess_cfg") or {})

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    @property
    def context_length(self) -> int:
        return int(self.config["inputs"]["input_ids"]["shape"][1])

    @property
    def logit_scale(self) -> float:
        return float(self.config.get("logit_scale", 100.0))

    @property
    def quantization(self) -> str:
        """``int8`` for a quantised image encoder, else ``fp32``."""
        q = self.config.get("quantization") or {}
        return str(q.get("dtype") or "fp32")

    @property
    def image_encoder_path(self) -> Path:
        return self.path / str(self.config.get("image_encoder") or ONNX_IMAGE)

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "arch": self.arch,
            "quick_gelu": self.quick_gelu,
            "arch_reason": self.arch_reason,
            "source": str(self.path),
            "image_size": self.image_size,
            "labels": len(self.labels) if self.labels is not None else 0,
            "backend": "onnxruntime",
            "quantization": self.quantization,
        }

    # -- text ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The bundled CLIP tokenizer (loaded on first use: classifying into the bundled label
        bank needs none)."""
        if self._tokenizer is None:
            from biotrove_cli.core.models.onnx.tokenizer import VOCAB_NAME, ClipTokenizer

            vocab = self.path / TOKENIZER_DIR / VOCAB_NAME
            if not vocab.is_file():
                raise ModelLoadError(
                    f"{self.path}: the ONNX bundle has no tokenizer ({TOKENIZER_DIR}/"
                    f"{VOCAB_NAME}), so it cannot encode new class texts",
                    hint="classify into its bundled labels (leave --labels, --text-type and "
                    "--templates out), or export it again with this biotrove",
                )
            self._tokenizer = ClipTokenizer(vocab, self.context_length)
        return self._tokenizer

    def text_fingerprint(self) -> str:
        """The text tower's identity: recorded by the export (the PyTorch model's fingerprint,
        so bundled embeddings are found), else the text encoder file's hash."""
        recorded = self.config.get("text_fingerprint")
        if recorded:
            return str(recorded)
        h = hashlib.blake2b(digest_size=16)
        with open(self.path / ONNX_TEXT, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def encode_texts(self, texts: list[str]) -> Any:
        """Unit-norm float32 text embeddings [n, D] (numpy)."""
        if self._text_session is None:
            self._text_session = session(self.path / ONNX_TEXT)
        tokens = self.tokenizer(texts)
        return self._text_session.run(None, {"input_ids": tokens})[0]


def load_onnx(path: Path, spec: str) -> OnnxModel:
    """An ONNX bundle (``onnx_config.json``, the encoders, labels and class embeddings)."""
    config = _read_json(path / ONNX_CONFIG)
    for key in ("inputs", "preprocess_cfg"):
        if key not in config:
            raise ModelLoadError(
                f"{path / ONNX_CONFIG}: has no {key!r}",
                hint="export the model again with `biotrove export --format onnx`",
            )
    image = path / str(config.get("image_encoder") or ONNX_IMAGE)
    if not image.is_file():
        raise ModelLoadError(
            f"{path}: the ONNX bundle has no image encoder ({image.name})",
            hint="export the model again with `biotrove export --format onnx`",
        )
    meta = _read_json(path / BUNDLE_META) if (path / BUNDLE_META).is_file() else {}
    labels = class_emb = None
    if (path / BUNDLE_LABELS).is_file():
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        labels = LabelBank.load(path / BUNDLE_LABELS)
        if (path / BUNDLE_EMBEDDINGS).is_file():
            from biotrove_cli.core.models.loaders import load_class_embeddings

            class_emb = load_class_embeddings(path / BUNDLE_EMBEDDINGS, framework="numpy")
    log.debug("ONNX bundle %s (%s, pid %d)", path, config.get("quantization"), os.getpid())
    return OnnxModel(path, spec, config, meta, labels, class_emb)
