"""``export_model``: the job of ``biotrove export``: load the source, write the chosen format
and the label bank into a temp folder, verify it, write the provenance and publish it."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.fmt import plain
from biotrove_cli.core.layout import BUNDLE_EMBEDDINGS, BUNDLE_META, BUNDLE_WEIGHTS
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


def export_model(cfg: ExportConfig, progress: ProgressFn | None = None) -> ExportResult:
    """Export ``cfg.source`` to ``cfg.out`` (see the module docstring).

    Args:
        cfg: what to export and how.
        progress: ``(done, total)`` callback while the label bank's prompts are encoded.

    Raises:
        UsageError: an impossible combination (ONNX in fp16/bf16, a bad text type).
        OutputExistsError: ``--out`` is not empty (and not ``force``) or not an export.
        ModelLoadError (and subclasses): the source is not a loadable, safe checkpoint.
        VerificationError: the reloaded export does not reproduce the source.
    """
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

    from biotrove_cli.core.models.load import load_model

    log.info(f"loading {cfg.source}")
    source = load_model(cfg.source, arch=cfg.arch, device="cpu")
    log.info(
        f"architecture {source.arch} (QuickGELU {'on' if source.quick_gelu else 'off'}); "
        f"why: {source.arch_reason}"
    )
    if bank is None and source.labels is not None:
        bank = source.labels
        log.info(f"bundling the source's label bank ({len(bank)} classes); --labels changes it")
    src_file = _source_file(source)
    source_sha = None
    if src_file is not None:
        from biotrove_cli.core.io import sha256_file

        source_sha = sha256_file(src_file)

    _remove_stale_temps(out)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".export-tmp", dir=out.parent)
    )
    try:
        labels_meta = None
        if fmt is ExportFormat.open_clip:
            log.info(f"writing the open_clip bundle ({dtype.value})")
            _write_open_clip(tmp, source, dtype)
        else:
            log.info("writing the ONNX image and text encoders (fp32)")
            _write_onnx(tmp, source)
        if bank is not None:
            labels_meta = _write_labels(
                tmp,
                source,
                bank,
                fmt=fmt,
                text_type=text_type,
                templates_name=templates_name,
                templates=templates,
                device=cfg.device,
                batch_size=cfg.batch_size,
                progress=progress,
            )
        verification = None
        skipped = None
        if cfg.verify:
            if fmt is ExportFormat.open_clip:
                verification = verify_open_clip(tmp, source, dtype, _verify_taxa(bank))
            elif _have("onnxruntime"):
                verification = verify_onnx(tmp, source, _verify_taxa(bank))
            else:
                skipped = "onnxruntime is not installed (pip install 'biotrove[onnx]')"
                log.warning(f"the ONNX export is not verified: {skipped}")
            if verification is not None:
                _report_or_raise(verification, dtype)
        provenance = _provenance(
            cfg, source, fmt, dtype, src_file, source_sha, labels_meta, verification
        )
        from biotrove_cli.core.io import atomic_write_json

        atomic_write_json(tmp / BUNDLE_META, provenance)
        files = _file_records(tmp)
        _publish(tmp, out, cfg.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(f"exported to {out}")
    return ExportResult(
        out=out,
        format=fmt,
        dtype=dtype,
        arch=source.arch,
        quick_gelu=source.quick_gelu,
        arch_reason=source.arch_reason,
        source=provenance["source"],
        source_sha256=source_sha,
        labels=len(bank) if bank is not None else 0,
        verification=verification,
        verify_skipped=skipped if cfg.verify else None,
        files=files,
        provenance=provenance,
    )


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
        },
        strict=True,
    )
