"""``biotrove export``: any model :func:`load.load_model` accepts -> a safe, portable, verified
bundle.

Formats:

* ``open_clip``: ``open_clip_config.json`` + ``open_clip_model.safetensors``, which stock
  ``open_clip.create_model_and_transforms("local-dir:DIR")`` loads with no biotrove installed
  (the architecture config, QuickGELU included, travels in the JSON), plus ``biotrove.json``
  (provenance). No optimizer state, no pickle.
* ``onnx``: ``image_encoder.onnx`` and ``text_encoder.onnx`` (L2-normalised embeddings, dynamic
  batch axis) and ``onnx_config.json`` (input shapes, preprocessing, logit scale), for
  deployment without PyTorch.

With a label bank, ``labels.parquet`` and ``class_embeddings.safetensors`` are bundled too: the
class text embeddings, encoded once by the fp32 source model and keyed (``prompts_key``) by the
text tower *as it reloads from the bundle*, so ``biotrove classify --model DIR`` uses them with
no label file and no text encoding.

Everything is written into a hidden temp folder beside ``--out`` and renamed into place only
when complete (and verified); with ``force`` an older export is replaced only after the new one
is complete. Verification reloads the export the way a user would, in a fresh Python process that
cannot import biotrove (and, for ONNX, not torch either), and compares image and text embeddings
with the source model on generated photos and prompts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import (
    BiotroveError,
    InputError,
    OutputExistsError,
    UsageError,
    VerificationError,
)
from biotrove_cli.core.taxonomy.captions import DEFAULT_CAPTION

log = logging.getLogger("biotrove")

ONNX_IMAGE = "image_encoder.onnx"
ONNX_TEXT = "text_encoder.onnx"
ONNX_CONFIG = "onnx_config.json"
ONNX_OPSET = 17
#: Marker files of a folder that is an export (and so may be replaced with ``force``).
EXPORT_MARKERS = ("biotrove.json", "open_clip_config.json", ONNX_CONFIG)


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

# Generic lineages for verification photos when no label bank gives taxa.
_VERIFY_TAXA = (
    ("Animalia", "Chordata", "Aves", "Passeriformes", "Sturnidae", "Sturnus", "vulgaris"),
    ("Animalia", "Arthropoda", "Insecta", "Hymenoptera", "Vespidae", "Vespula", "vulgaris"),
    ("Animalia", "Chordata", "Mammalia", "Rodentia", "Sciuridae", "Sciurus", "aberti"),
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus", "alba"),
)


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
            add("verify", "passed", v.passed)
        else:
            add("verify", "skipped", self.verify_skipped or "--no-verify")
        for f in self.files:
            add("files", f["name"], _human(f["bytes"]))
        return rows

    def document(self) -> dict[str, Any]:
        """The JSON report: where the export went and its provenance."""
        return {"out": str(self.out), **self.provenance, "files": self.files}


# -- helpers ---------------------------------------------------------------------------------
def _human(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def jsonable(value: Any) -> Any:
    """Plain JSON data from checkpoint metadata (numpy/torch scalars, paths, tuples...)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (Path, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def check_out(out: Path, force: bool) -> None:
    """Refuse an output location that holds something an export must not overwrite.

    An empty folder is fine; a non-empty one needs ``force``, and even then only an earlier
    export (a folder with biotrove.json, open_clip_config.json or onnx_config.json) is replaced,
    so a mistyped ``--out .`` cannot delete a project.
    """
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise OutputExistsError(
            f"{out}: exists and is not a folder",
            hint="choose another --out (an export is a folder)",
        )
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputExistsError(
            f"{out}: the folder exists and is not empty",
            hint="pass --force to replace it (the old export is removed only after the new one "
            "is complete), or choose another --out",
        )
    if not any((out / m).is_file() for m in EXPORT_MARKERS):
        raise OutputExistsError(
            f"{out}: holds files that are not a biotrove export; refusing to replace it even "
            "with --force",
            hint="choose a new or empty folder for --out",
        )


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Move the complete export from ``tmp`` to ``out``; an old export goes only after that."""
    from biotrove_cli.core.io import fsync_dir

    # mkdtemp/mkstemp create private (0700/0600) entries; a model folder is for sharing
    mask = os.umask(0o022)
    os.umask(mask)
    for p in tmp.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)
            _fsync_file(p)
    os.chmod(tmp, 0o777 & ~mask)
    fsync_dir(tmp)
    check_out(out, force)  # again: something may have appeared meanwhile
    old: Path | None = None
    if out.exists() or out.is_symlink():
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _source_file(loaded: Any) -> Path | None:
    """The file the weights came from (a bundle's weights file for a bundle), if any."""
    src = loaded.source
    if src is None:
        return None
    src = Path(src)
    if src.is_dir():
        from biotrove_cli.core.models.load import BUNDLE_WEIGHTS

        if (src / BUNDLE_WEIGHTS).is_file():
            return src / BUNDLE_WEIGHTS
        found = sorted(
            p for p in src.glob("*.safetensors") if p.name != "class_embeddings.safetensors"
        )
        return found[0] if found else None
    return src if src.is_file() else None


def _torch_dtype(dtype: Dtype):
    import torch

    return {Dtype.fp32: torch.float32, Dtype.fp16: torch.float16, Dtype.bf16: torch.bfloat16}[dtype]


def _file_records(folder: Path) -> list[dict[str, Any]]:
    from biotrove_cli.core.io import sha256_file

    return [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file()
    ]


# -- the export ------------------------------------------------------------------------------
def _remove_stale_temps(out: Path) -> None:
    """Delete the temp folders of exports to ``out`` whose process is gone (kill -9, power)."""
    if not out.parent.is_dir():
        return
    for tmp in out.parent.glob(f".{out.name}.*.export-tmp"):
        parts = tmp.name[len(out.name) + 2 :].split(".")
        try:
            pid = int(parts[0])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
            continue  # that export is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        log.info(f"removed {tmp.name}, left behind by an interrupted export")


def export_model(
    cfg: ExportConfig, progress: Callable[[int, int], None] | None = None
) -> ExportResult:
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
        from biotrove_cli.core.models.load import BUNDLE_META

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

    return jsonable(
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
        }
    )


def _report_or_raise(v: Verification, dtype: Dtype) -> None:
    log.info(
        f"verified ({v.method}): image max |diff| {v.image_max_abs_diff:.2e}, text max |diff| "
        f"{v.text_max_abs_diff:.2e} (tolerance {v.tolerance:.0e} for {dtype.value})"
    )
    if not v.passed:
        raise VerificationError(
            f"verification failed: the reloaded export differs from the source (image max "
            f"|diff| {v.image_max_abs_diff:.2e}, text max |diff| {v.text_max_abs_diff:.2e}, "
            f"tolerance {v.tolerance:.0e} for {dtype.value}); nothing was written",
            hint="check the architecture (--arch, QuickGELU) or export --dtype fp32; "
            "--no-verify writes the export unchecked",
        )


# -- open_clip format ------------------------------------------------------------------------
def _write_open_clip(tmp: Path, source: Any, dtype: Dtype) -> None:
    """open_clip_config.json + open_clip_model.safetensors (+ HF tokenizer files if any)."""
    from safetensors.torch import save_file

    from biotrove_cli.core.io import atomic_write_json
    from biotrove_cli.core.models.load import BUNDLE_CONFIG, BUNDLE_WEIGHTS

    tdtype = _torch_dtype(dtype)
    tensors = {}
    for name, t in source.model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(tdtype)
        tensors[name] = t.contiguous()
    save_file(tensors, str(tmp / BUNDLE_WEIGHTS), metadata={"format": "pt"})
    del tensors
    model_cfg = jsonable(dict(source.model_cfg))
    model_cfg["quick_gelu"] = bool(source.quick_gelu)
    pcfg = {
        k: v
        for k, v in jsonable(dict(source.preprocess_cfg)).items()
        if k in ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
    }
    atomic_write_json(tmp / BUNDLE_CONFIG, {"model_cfg": model_cfg, "preprocess_cfg": pcfg})
    text_cfg = model_cfg.get("text_cfg") or {}
    if text_cfg.get("hf_tokenizer_name") and hasattr(source.tokenizer, "save_pretrained"):
        # open_clip's local-dir loader reads an HF tokenizer from the folder itself
        source.tokenizer.save_pretrained(str(tmp))


# -- labels ----------------------------------------------------------------------------------
def _write_labels(
    tmp: Path,
    source: Any,
    bank: Any,
    *,
    fmt: ExportFormat,
    text_type: str,
    templates_name: str,
    templates: Sequence[str],
    device: str,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """labels.parquet + class_embeddings.safetensors, keyed for the bundle's own text tower."""
    from safetensors.torch import save_file

    from biotrove_cli.core.evaluation import text
    from biotrove_cli.core.models.load import (
        BUNDLE_EMBEDDINGS,
        BUNDLE_LABELS,
        load_bundle,
        load_class_embeddings,
    )
    from biotrove_cli.core.taxonomy.rank import Rank

    prompts = text.class_prompts(bank, Rank.SPECIES, text_type, templates)
    if fmt is ExportFormat.open_clip:
        # The key must be what a user's load_model(DIR) computes: the text tower as it reloads
        # from the bundle (fp16/bf16 rounding changes its weights, hence its fingerprint).
        reloaded = load_bundle(tmp, str(tmp), "cpu")
        fingerprint = reloaded.text_fingerprint()
    else:
        reloaded = None
        fingerprint = source.text_fingerprint()  # ONNX weights are the fp32 source's
    key = text.cache_key(fingerprint, prompts)
    log.info(f"encoding {sum(len(p) for p in prompts)} prompts for {len(prompts)} classes")
    model_device = source.device
    try:
        if str(device) != str(model_device):
            source.model.to(device)
        emb = text.encode_prompts(source, prompts, batch_size=batch_size, progress=progress)
    finally:
        source.model.to(model_device)
    bank.save(tmp / BUNDLE_LABELS)
    meta = {
        "prompts_key": key,
        "text_type": text_type if not bank.is_custom else "custom",
        "templates": templates_name,
        "template_strings": json.dumps(list(templates)),
        "rank": "label" if bank.is_custom else "species",
        "classes": str(len(prompts)),
        "encoded_by": "the fp32 source model",
    }
    save_file({"embeddings": emb.float().contiguous()}, str(tmp / BUNDLE_EMBEDDINGS), metadata=meta)
    if reloaded is not None:
        # read it back as load_bundle will: classify must find these embeddings by their key
        reloaded.class_embeddings = load_class_embeddings(tmp / BUNDLE_EMBEDDINGS)
        if text.bundled_embeddings(reloaded, key, len(prompts)) is None:  # pragma: no cover
            raise VerificationError(
                "the bundled class embeddings do not read back under their prompts key",
                hint="this is a bug in biotrove export; report it",
            )
    return {
        "classes": len(prompts),
        "source": str(bank.source),
        "text_type": meta["text_type"],
        "templates": templates_name,
        "prompts_key": key,
    }


# -- ONNX format -----------------------------------------------------------------------------
def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _require_onnx() -> None:
    if not _have("onnx"):
        raise BiotroveError(
            "--format onnx needs the onnx package, which is not installed",
            hint="pip install 'biotrove[onnx]' (onnx and onnxruntime)",
        )


def _encoders(model: Any):
    import torch
    import torch.nn.functional as F

    class ImageEncoder(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return F.normalize(self.m.encode_image(pixel_values), dim=-1)

    class TextEncoder(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return F.normalize(self.m.encode_text(input_ids), dim=-1)

    return ImageEncoder(model).eval(), TextEncoder(model).eval()


def _write_onnx(tmp: Path, source: Any) -> None:
    import warnings

    import torch

    from biotrove_cli.core.io import atomic_write_json

    model = source.model.to("cpu").float().eval()
    image_enc, text_enc = _encoders(model)
    size = source.image_size
    pixels = torch.zeros(2, 3, size, size)
    tokens = source.tokenizer(["a photo of a bird.", "a photo of a plant."])
    try:
        # no torch.no_grad() here: under it nn.MultiheadAttention takes its fused fast path,
        # whose op (aten::_native_multi_head_attention) has no ONNX export
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings are not for users
            torch.onnx.export(
                image_enc,
                (pixels,),
                str(tmp / ONNX_IMAGE),
                dynamo=False,
                input_names=["pixel_values"],
                output_names=["image_embeddings"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
            torch.onnx.export(
                text_enc,
                (tokens,),
                str(tmp / ONNX_TEXT),
                dynamo=False,
                input_names=["input_ids"],
                output_names=["text_embeddings"],
                dynamic_axes={"input_ids": {0: "batch"}, "text_embeddings": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        import onnx

        for name in (ONNX_IMAGE, ONNX_TEXT):
            onnx.checker.check_model(str(tmp / name))
    except (RuntimeError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BiotroveError(
            f"ONNX export of {source.arch} failed ({first[:300]})",
            hint="export --format open_clip instead; rerun with BIOTROVE_DEBUG=1 for details",
        ) from exc
    with torch.no_grad():
        logit_scale = float(model.logit_scale.exp())
    atomic_write_json(
        tmp / ONNX_CONFIG,
        jsonable(
            {
                "image_encoder": ONNX_IMAGE,
                "text_encoder": ONNX_TEXT,
                "opset": ONNX_OPSET,
                "inputs": {
                    "pixel_values": {"shape": ["batch", 3, size, size], "dtype": "float32"},
                    "input_ids": {
                        "shape": ["batch", source.context_length],
                        "dtype": "int64",
                    },
                },
                "outputs": {
                    "image_embeddings": "L2-normalised [batch, embed_dim] float32",
                    "text_embeddings": "L2-normalised [batch, embed_dim] float32",
                },
                "embed_dim": int(image_enc(pixels[:1]).shape[-1]),
                "logit_scale": logit_scale,
                "preprocess_cfg": dict(source.preprocess_cfg),
                "tokenizer": "open_clip SimpleTokenizer (CLIP BPE, lower-cased), "
                f"context_length {source.context_length}",
                "model_cfg": dict(source.model_cfg),
            }
        ),
    )


# -- verification ----------------------------------------------------------------------------
_OPEN_CLIP_CHECK = r"""
import sys
sys.modules["biotrove_cli"] = None  # the export must load with stock open_clip alone
import json
import torch
import open_clip
from PIL import Image
from safetensors.torch import save_file

bundle, inputs, out = sys.argv[1:4]
with open(inputs, encoding="utf-8") as fh:
    spec = json.load(fh)
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + bundle)
tokenizer = open_clip.get_tokenizer("local-dir:" + bundle)
model.eval()
pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in spec["images"]])
tokens = tokenizer(spec["texts"])
with torch.no_grad():
    image = model.encode_image(pixels, normalize=True).float()
    text = model.encode_text(tokens, normalize=True).float()
save_file({"pixels": pixels.contiguous(), "tokens": tokens.contiguous(),
           "image": image.contiguous(), "text": text.contiguous()}, out)
"""

_ONNX_CHECK = r"""
import sys
sys.modules["torch"] = None  # deployment without PyTorch (nor biotrove)
sys.modules["biotrove_cli"] = None
import numpy as np
import onnxruntime as ort

folder, inputs, out = sys.argv[1:4]
data = np.load(inputs)
opts = ort.SessionOptions()
opts.log_severity_level = 3
ep = ["CPUExecutionProvider"]
image = ort.InferenceSession(folder + "/image_encoder.onnx", opts, providers=ep)
text = ort.InferenceSession(folder + "/text_encoder.onnx", opts, providers=ep)
np.savez(out,
         image=image.run(None, {"pixel_values": data["pixels"]})[0],
         text=text.run(None, {"input_ids": data["tokens"]})[0])
"""


def _verify_taxa(bank: Any) -> list[Any]:
    from biotrove_cli.core.taxonomy.lineage import Taxon

    if bank is not None and not bank.is_custom and len(bank.taxa) >= 1:
        return list(bank.taxa[:4])
    return [Taxon.from_parts(*names) for names in _VERIFY_TAXA]


def _inputs(taxa: list[Any], scratch: Path) -> tuple[list[Path], list[str]]:
    """Generated photos (PNG, lossless) and prompts for comparing embeddings."""
    from biotrove_cli.core.data.world import render
    from biotrove_cli.core.taxonomy.captions import caption_body

    images = []
    for i, taxon in enumerate(taxa):
        p = scratch / f"photo-{i}.png"
        render(taxon, index=i, seed=7, size=(96, 80)).save(p)
        images.append(p)
    texts = [f"a photo of {caption_body(t, 'taxon')}." for t in taxa]
    texts.append(f"a photo of {taxa[0].common_name or taxa[0].binomial}, a living thing.")
    return images, texts


def _reference(source: Any, images: list[Path], texts: list[str]):
    import torch
    from PIL import Image

    model = source.model.to("cpu").eval()
    with torch.inference_mode():
        pixels = torch.stack([source.preprocess(Image.open(p).convert("RGB")) for p in images])
        tokens = source.tokenizer(texts)
        image = model.encode_image(pixels, normalize=True).float()
        text_emb = model.encode_text(tokens, normalize=True).float()
    return pixels, tokens, image, text_emb


def _run_python(script: str, args: list[str], cwd: Path, what: str, timeout: float = 1800) -> None:
    """Run ``script`` in a fresh, isolated Python (``-I``: no cwd, no PYTHONPATH on sys.path)."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"  # an export needs no network; prove it
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", script, *args],
            cwd=str(cwd),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise VerificationError(
            f"verification failed: {what} did not finish within {timeout:.0f} s",
            hint="--no-verify writes the export unchecked",
        ) from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        if proc.returncode < 0:
            why = f"crashed with signal {-proc.returncode}"
        else:
            why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        log.debug(proc.stderr)
        raise VerificationError(
            f"verification failed: {what} cannot load the export ({why[:300]}); nothing was "
            "written",
            hint="rerun with -v for the reloading process's output; --no-verify writes the "
            "export unchecked",
        )


def _max_diff(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def verify_open_clip(folder: Path, source: Any, dtype: Dtype, taxa: list[Any]) -> Verification:
    """Reload ``folder`` with stock open_clip (``local-dir:``) in a Python that cannot import
    biotrove, and compare its preprocessing, tokens and embeddings with the source model."""
    from safetensors.torch import load_file

    method = "stock open_clip local-dir: in a fresh Python without biotrove"
    log.info(f"verifying: {method}")
    with tempfile.TemporaryDirectory(prefix="biotrove-verify-") as scratch_name:
        scratch = Path(scratch_name)
        images, texts = _inputs(taxa, scratch)
        (scratch / "inputs.json").write_text(
            json.dumps({"images": [str(p) for p in images], "texts": texts}), encoding="utf-8"
        )
        _run_python(
            _OPEN_CLIP_CHECK,
            [str(folder), str(scratch / "inputs.json"), str(scratch / "out.safetensors")],
            scratch,
            "stock open_clip",
        )
        got = load_file(str(scratch / "out.safetensors"))
        pixels, tokens, image, text_emb = _reference(source, images, texts)
    if got["tokens"].shape != tokens.shape or not bool((got["tokens"] == tokens).all()):
        raise VerificationError(
            "verification failed: the export's tokenizer (open_clip local-dir:) tokenizes "
            "differently from the source model's; nothing was written",
            hint="the source uses a tokenizer open_clip cannot rebuild from the bundle config",
        )
    pixel_diff = _max_diff(got["pixels"], pixels)
    tol = TOLERANCE[dtype]
    v = Verification(
        method=method,
        images=len(images),
        texts=len(texts),
        image_max_abs_diff=_max_diff(got["image"], image),
        text_max_abs_diff=_max_diff(got["text"], text_emb),
        tolerance=tol,
        passed=False,
        pixel_max_abs_diff=pixel_diff,
    )
    v.passed = v.image_max_abs_diff <= tol and v.text_max_abs_diff <= tol and pixel_diff <= 1e-4
    return v


def verify_onnx(folder: Path, source: Any, taxa: list[Any]) -> Verification:
    """Run the ONNX encoders with onnxruntime in a Python that cannot import torch (nor
    biotrove), on a batch size other than the exported one, and compare with the source."""
    import numpy as np
    import torch

    method = "onnxruntime (CPU) in a fresh Python without torch"
    log.info(f"verifying: {method}")
    with tempfile.TemporaryDirectory(prefix="biotrove-verify-") as scratch_name:
        scratch = Path(scratch_name)
        images, texts = _inputs(taxa, scratch)
        pixels, tokens, image, text_emb = _reference(source, images, texts)
        np.savez(
            scratch / "inputs.npz",
            pixels=pixels.numpy().astype(np.float32),
            tokens=tokens.numpy().astype(np.int64),
        )
        _run_python(
            _ONNX_CHECK,
            [str(folder), str(scratch / "inputs.npz"), str(scratch / "out.npz")],
            scratch,
            "onnxruntime",
        )
        with np.load(scratch / "out.npz") as got:
            got_image = torch.from_numpy(got["image"].copy())
            got_text = torch.from_numpy(got["text"].copy())
    tol = TOLERANCE[Dtype.fp32]
    v = Verification(
        method=method,
        images=len(images),
        texts=len(texts),
        image_max_abs_diff=_max_diff(got_image, image),
        text_max_abs_diff=_max_diff(got_text, text_emb),
        tolerance=tol,
        passed=False,
    )
    v.passed = v.image_max_abs_diff <= tol and v.text_max_abs_diff <= tol
    return v
