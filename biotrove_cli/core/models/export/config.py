"""The export's types: formats, dtypes and their verification tolerances, the job's config (the
CLI flags, typed), the verification outcome and the result with its report rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from biotrove_cli.core.fmt import human_size
from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION


class ExportFormat(str, Enum):
    open_clip = "open_clip"
    onnx = "onnx"


class Dtype(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


#: Max abs difference of unit-norm embeddings allowed between the source and the reloaded export.
#: fp32 is the same arithmetic in another process (differences ~1e-7); fp16/bf16 round every
#: weight (relative error 2^-11 / 2^-8), which moves ViT-B embeddings by ~1e-4 / ~1e-3.
TOLERANCE = {Dtype.fp32: 1e-4, Dtype.fp16: 5e-3, Dtype.bf16: 3e-2}


@dataclass
class ExportConfig:
    """What to export and how (the CLI flags, typed)."""

    source: str  # anything load_model accepts
    out: Path
    dtype: Dtype = Dtype.fp32
    format: ExportFormat = ExportFormat.open_clip
    labels: Path | None = None  # label bank to bundle (default: the source's own, if any)
    arch: str | None = None  # open_clip architecture when it cannot be inferred
    # class text of the bundled embeddings: the shard caption default, which eval/classify
    # use by default too, so a bundle classifies out of the box
    text_type: str = DEFAULT_CAPTION
    templates: str = "simple"  # simple | openai | a template file
    verify: bool = True
    force: bool = False
    device: str = "cpu"  # where the label prompts are encoded
    batch_size: int = 256
    quantize: str | None = None  # ONNX: "int8" (dynamic, or static with calibration photos)
    calibration: Path | None = None  # ONNX: photos for static int8 and the agreement check
    min_agreement: float = 0.98  # ONNX: top-1 agreement with the fp32 source model, at least


@dataclass
class Verification:
    """How the reloaded export compares with the source model."""

    method: str
    images: int
    texts: int
    image_max_abs_diff: float
    text_max_abs_diff: float
    tolerance: float
    passed: bool
    pixel_max_abs_diff: float | None = None  # open_clip: the bundle's preprocessing vs source
    # ONNX: top-1 agreement of the bundle (biotrove's ONNX backend, numpy preprocessing) with
    # the fp32 PyTorch source over the bundled classes, on calibration or generated photos
    agreement: float | None = None
    agreement_images: int = 0
    min_agreement: float | None = None


@dataclass
class ExportResult:
    out: Path
    format: ExportFormat
    dtype: Dtype
    arch: str
    quick_gelu: bool
    arch_reason: str
    source: str
    source_sha256: str | None
    labels: int
    verification: Verification | None
    verify_skipped: str | None
    files: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """section/key/value rows for the CLI's report."""
        rows: list[dict[str, Any]] = []

        def add(section: str, key: str, value: Any) -> None:
            # display text (a mixed column); document() keeps numbers as numbers for JSON
            if isinstance(value, bool):
                value = "true" if value else "false"
            rows.append({"section": section, "key": key, "value": str(value)})

        add("export", "out", str(self.out))
        add("export", "format", self.format.value)
        add("export", "dtype", self.dtype.value)
        quant = (self.provenance.get("quantization") or {}).get("method")
        if quant:
            add("export", "quantize", f"int8 ({quant})")
        add("model", "arch", self.arch)
        add("model", "quick_gelu", self.quick_gelu)
        add("model", "arch_reason", self.arch_reason)
        add("model", "source", self.source)
        if self.source_sha256:
            add("model", "source_sha256", self.source_sha256)
        if self.labels:
            lab = self.provenance.get("labels") or {}
            add("labels", "classes", self.labels)
            add("labels", "text_type", lab.get("text_type"))
            add("labels", "templates", lab.get("templates"))
        if self.verification is not None:
            v = self.verification
            add("verify", "method", v.method)
            # scientific notation: a table's 4 decimals would print 1e-07 as 0
            add("verify", "image_max_abs_diff", f"{v.image_max_abs_diff:.2e}")
            add("verify", "text_max_abs_diff", f"{v.text_max_abs_diff:.2e}")
            add("verify", "tolerance", f"{v.tolerance:.0e}")
            if v.agreement is not None:
                add("verify", "top1_agreement", f"{v.agreement:.4f} ({v.agreement_images} photos)")
                add("verify", "min_agreement", f"{v.min_agreement:g}")
            add("verify", "passed", v.passed)
        else:
            add("verify", "skipped", self.verify_skipped or "--no-verify")
        for f in self.files:
            add("files", f["name"], human_size(f["bytes"]))
        return rows

    def document(self) -> dict[str, Any]:
        """The JSON report: where the export went and its provenance."""
        return {"out": str(self.out), **self.provenance, "files": self.files}
