"""``export_model``: ``biotrove export``'s entry point: refuse what can be refused, load the
source (anything :func:`load.load_model` accepts), then export it (:mod:`.job`)."""

from __future__ import annotations

import logging

from biotrove_cli.core.models.export.config import ExportConfig, ExportResult
from biotrove_cli.core.models.export.job import check_export, export_loaded
from biotrove_cli.core.runtime import ProgressFn

log = logging.getLogger("biotrove")


def export_model(cfg: ExportConfig, progress: ProgressFn | None = None) -> ExportResult:
    """Export ``cfg.source`` to ``cfg.out`` (see the package docstring).

    Args:
        cfg: what to export and how.
        progress: ``(done, total)`` callback while the label bank's prompts are encoded.

    Raises:
        UsageError: an impossible combination (ONNX in fp16/bf16, a bad text type).
        OutputExistsError: ``--out`` is not empty (and not ``force``) or not an export.
        ModelLoadError (and subclasses): the source is not a loadable, safe checkpoint.
        VerificationError: the reloaded export does not reproduce the source.
    """
    from biotrove_cli.core.models.load import load_model

    job = check_export(cfg)  # before the model loads: a typo fails at once
    log.info(f"loading {cfg.source}")
    source = load_model(cfg.source, arch=cfg.arch, device="cpu")
    log.info(
        f"architecture {source.arch} (QuickGELU {'on' if source.quick_gelu else 'off'}); "
        f"why: {source.arch_reason}"
    )
    return export_loaded(job, source, progress)
