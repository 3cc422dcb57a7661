"""The job of ``biotrove export`` once the source is loaded: check the inputs, write the chosen
format and the label bank into a temp folder, verify it, write the provenance and publish it.

Loading the source is :mod:`.entry`'s (``export_model``), so that this module never imports the
model loader and the loader can convert a published checkpoint with it (BioTrove-CLIP presets)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.fmt import plain
from biotrove_cli.core.io import atomic_write_json, sha256_file
from biotrove_cli.core.layout import BUNDLE_CONFIG, BUNDLE_EMBEDDINGS, BUNDLE_META, BUNDLE_WEIGHTS
from biotrove_cli.core.models.export.config import (
    Dtype,
    ExportConfig,
    ExportFormat,
    ExportResult,
    Verification,
)
from biotrove_cli.core.models.export.labels import _write_labels
from biotrove_cli.core.models.export.onnx import _have, _require_onnx, _write_onnx
from biotrove_cli.core.models.export.open_clip import _write_open_clip
from biotrove_cli.core.models.export.publish import (
    _file_records,
    _make_temp,
    _publish,
    _remove_stale_temps,
    check_out,
)
from biotrove_cli.core.models.export.verify import (
    _report_or_raise,
    _verify_taxa,
    verify_onnx,
    verify_open_clip,
)
from biotrove_cli.core.models.export.verify_agreement import measure_agreement
from biotrove_cli.core.runtime import ProgressFn

log = logging.getLogger("biotrove")


def _source_file(loaded: Any) -> Path | None:
    """The file the weights came from (a bundle's weights file for a bundle), if any."""
    src = loaded.source
    if src is None:
        return None
    src = Path(src)
    if src.is_dir():
        if (src / BUNDLE_WEIGHTS).is_file():
            return src / BUNDLE_WEIGHTS
        found = sorted(p for p in src.glob("*.safetensors") if p.name != BUNDLE_EMBEDDINGS)
        return found[0] if found else None
    return src if src.is_file() else None


@dataclass
class ExportJob:
    """The checked inputs of one export (:func:`check_export`)."""

    cfg: ExportConfig
    dtype: Dtype
    fmt: ExportFormat
    out: Path
    text_type: str
    templates_name: str
    templates: Sequence[str]
    bank: Any  # the LabelBank to bundle, or None
    calibration: list[str] | None = None  # --calibration's photos (ONNX)


def export_loaded(job: ExportJob, source: Any, progress: ProgressFn | None = None) -> ExportResult:
    """Export a loaded ``source`` as ``job`` (from :func:`check_export`) says.

    Without a label bank of the job's own, the source's is bundled (a run's, a bundle's).

    Args:
        progress: ``(done, total)`` callback while the label bank's prompts are encoded.

    Raises:
        OutputExistsError: something appeared at ``--out`` meanwhile.
        VerificationError: the reloaded export does not reproduce the source.
    """
    cfg = job.cfg
    if job.bank is None and source.labels is not None:
        job.bank = source.labels
        log.info(f"bundling the source's label bank ({len(job.bank)} classes); --labels changes it")
    src_file = _source_file(source)
    source_sha = sha256_file(src_file) if src_file is not None else None
    _remove_stale_temps(job.out)
    tmp = _make_temp(job.out)
    try:
        labels_meta = _write(tmp, job, source, progress)
        verification, skipped = _verify(tmp, job, source)
        provenance = _provenance(
            cfg, source, job.fmt, job.dtype, src_file, source_sha, labels_meta, verification
        )
        if (tmp / BUNDLE_CONFIG).is_file():
            # loading warns when the config is edited afterwards (e.g. its mean/std)
            provenance["config_sha256"] = sha256_file(tmp / BUNDLE_CONFIG)
        atomic_write_json(tmp / BUNDLE_META, provenance)
        files = _file_records(tmp)
        _publish(tmp, job.out, cfg.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(f"exported to {job.out}")
    return ExportResult(
        out=job.out,
        format=job.fmt,
        dtype=job.dtype,
        arch=source.arch,
        quick_gelu=source.quick_gelu,
        arch_reason=source.arch_reason,
        source=provenance["source"],
        source_sha256=source_sha,
        labels=len(job.bank) if job.bank is not None else 0,
        verification=verification,
        verify_skipped=skipped if cfg.verify else None,
        files=files,
        provenance=provenance,
    )


def check_export(cfg: ExportConfig) -> ExportJob:
    """Everything that can be refused before the model loads, refused; ``--out``'s parent made."""
    from biotrove_cli.core.evaluation.templates import load_templates
    from biotrove_cli.core.taxonomy.captions import check_text_type

    dtype = Dtype(cfg.dtype)
    fmt = ExportFormat(cfg.format)
    if fmt is ExportFormat.onnx and dtype is not Dtype.fp32:
        raise UsageError(
            f"--format onnx exports fp32 only, not {dtype.value}",
            hint="onnxruntime's CPU kernels lack (or crash on) fp16/bf16 graphs; use "
            "--dtype fp32 for ONNX, or --format open_clip --dtype fp16",
        )
    if fmt is ExportFormat.onnx:
        _require_onnx()
    calibration = _check_onnx_flags(cfg, fmt)
    text_type = check_text_type(cfg.text_type)
    templates_name, templates = load_templates(cfg.templates)
    out = Path(cfg.out).expanduser().absolute()
    check_out(out, cfg.force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out.parent}: cannot create the folder ({exc})") from exc
    bank = None
    if cfg.labels is not None:
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        bank = LabelBank.load(cfg.labels)
    return ExportJob(cfg, dtype, fmt, out, text_type, templates_name, templates, bank, calibration)


def _check_onnx_flags(cfg: ExportConfig, fmt: ExportFormat) -> list[str] | None:
    """Refuse ONNX-only flags elsewhere and a bad --quantize / --min-agreement; the photos
    of --calibration (None without it)."""
    if fmt is not ExportFormat.onnx:
        for flag, value in (("--quantize", cfg.quantize), ("--calibration", cfg.calibration)):
            if value:
                raise UsageError(
                    f"{flag} is for --format onnx", hint=f"add --format onnx, or drop {flag}"
                )
    if cfg.quantize not in (None, "int8"):
        raise UsageError(f"--quantize {cfg.quantize}: unknown", hint="use --quantize int8")
    if not 0.0 <= cfg.min_agreement <= 1.0:
        raise UsageError(
            f"--min-agreement must be in [0, 1], got {cfg.min_agreement}",
            hint="a fraction of photos, e.g. 0.98",
        )
    if cfg.quantize and not _have("onnxruntime"):
        raise UsageError(
            "--quantize int8 needs onnxruntime, which is not installed",
            hint="pip install 'biotrove[onnx]' (onnx and onnxruntime)",
        )
    if cfg.calibration is None:
        return None
    from biotrove_cli.core.evaluation.classify_inputs import expand_paths

    try:
        photos = expand_paths([str(cfg.calibration)], recursive=True, stdin=None)
    except InputError as exc:
        raise InputError(
            f"--calibration: {exc.message}",
            hint="pass a folder (or glob) of JPEG/PNG photos like the ones you will classify",
        ) from exc
    if not photos:
        raise InputError(
            f"--calibration {cfg.calibration}: no photos there",
            hint="pass a folder (or glob) of JPEG/PNG photos like the ones you will classify",
        )
    return photos


def _write(tmp: Path, job: ExportJob, source: Any, progress: ProgressFn | None) -> dict | None:
    """The chosen format, then the label bank; returns the labels' provenance (or None)."""
    if job.fmt is ExportFormat.open_clip:
        log.info(f"writing the open_clip bundle ({job.dtype.value})")
        _write_open_clip(tmp, source, job.dtype)
    else:
        log.info("writing the ONNX image and text encoders (fp32)")
        _write_onnx(tmp, source)
        if job.cfg.quantize:
            from biotrove_cli.core.models.export.quantize import quantize_image_encoder

            log.info("quantising the image encoder to int8")
            info = quantize_image_encoder(tmp, job.calibration, dict(source.preprocess_cfg))
            _set_onnx_config(tmp, quantization=info)
    if job.bank is None:
        return None
    return _write_labels(
        tmp,
        source,
        job.bank,
        fmt=job.fmt,
        text_type=job.text_type,
        templates_name=job.templates_name,
        templates=job.templates,
        device=job.cfg.device,
        batch_size=job.cfg.batch_size,
        progress=progress,
    )


def _verify(tmp: Path, job: ExportJob, source: Any) -> tuple[Verification | None, str | None]:
    """Verify the written export (unless ``--no-verify``); a failure raises.

    Returns:
        (the verification or None, why it was skipped or None)
    """
    if not job.cfg.verify:
        return None, None
    if job.fmt is ExportFormat.open_clip:
        verification = verify_open_clip(tmp, source, job.dtype, _verify_taxa(job.bank))
    elif _have("onnxruntime"):
        quantized = bool(job.cfg.quantize)
        verification = verify_onnx(tmp, source, _verify_taxa(job.bank), quantized=quantized)
        measure_agreement(verification, tmp, source, job.calibration, job.cfg.min_agreement)
    else:
        skipped = "onnxruntime is not installed (pip install 'biotrove[onnx]')"
        log.warning(f"the ONNX export is not verified: {skipped}")
        return None, skipped
    _report_or_raise(verification, job.dtype)
    return verification, None


def _provenance(
    cfg: ExportConfig,
    source: Any,
    fmt: ExportFormat,
    dtype: Dtype,
    src_file: Path | None,
    source_sha: str | None,
    labels_meta: dict[str, Any] | None,
    verification: Verification | None,
) -> dict[str, Any]:
    import open_clip
    import torch

    from biotrove_cli import __version__

    return plain(
        {
            "format": fmt.value,
            "arch": source.arch,
            "quick_gelu": bool(source.quick_gelu),
            "arch_reason": source.arch_reason,
            "dtype": dtype.value,
            "source": str(src_file.resolve()) if src_file is not None else cfg.source,
            "source_spec": cfg.source,
            "source_kind": source.kind,
            "source_sha256": source_sha,
            "biotrove_version": __version__,
            "open_clip_version": getattr(open_clip, "__version__", None),
            "torch_version": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "image_size": source.image_size,
            "context_length": source.context_length,
            "checkpoint": source.checkpoint_meta or None,
            "training_config": source.train_config,
            "labels": labels_meta,
            "verification": asdict(verification) if verification is not None else None,
            "quantization": _onnx_quantization(cfg),
        },
        strict=True,
    )


def _set_onnx_config(tmp: Path, **fields: Any) -> None:
    """Update fields of the ONNX bundle's ``onnx_config.json`` (in the temp folder)."""
    import json

    from biotrove_cli.core.layout import ONNX_CONFIG

    config = json.loads((tmp / ONNX_CONFIG).read_text(encoding="utf-8"))
    config.update(fields)
    atomic_write_json(tmp / ONNX_CONFIG, plain(config, strict=True))


def _onnx_quantization(cfg: ExportConfig) -> dict[str, Any] | None:
    if not cfg.quantize:
        return None
    return {
        "dtype": cfg.quantize,
        "method": "static" if cfg.calibration is not None else "dynamic",
        "calibration": str(cfg.calibration) if cfg.calibration is not None else None,
    }
