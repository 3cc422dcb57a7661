"""``biotrove embed``: images -> L2-normalised image embeddings, one row per image, streamed
batch by batch; or (``text``) a label bank's class texts -> class text embeddings, one row per
class.

The images are read as ``classify`` reads them (files, folders, ``--recursive``, globs, ``-``)
and pass through the same engine (:mod:`image_pass`): the embedding of a photo is exactly the
image feature ``classify`` scores, which is stock open_clip's ``encode_image(normalize=True)``
on the same pixels. An unreadable file becomes a row with its reason in ``error`` and no
embedding (``strict`` stops instead). A class text embedding is the normalised mean of the
class's prompt embeddings (the zero-shot classifier's weights), from the bundle or the cache
when they are there.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.evaluation.classify_inputs import expand_paths
from biotrove_cli.core.evaluation.classify_records import LINEAGE_COLUMNS
from biotrove_cli.core.evaluation.embed_store import EMBEDDING, EmbeddingStore
from biotrove_cli.core.evaluation.image_pass import REASONS, encode_batches
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.banks import DEFAULT_BANK

log = logging.getLogger("biotrove")

IMAGE_COLUMNS = ("path", EMBEDDING, "model", "dims", "error")
TEXT_COLUMNS = ("name", "common_name", *LINEAGE_COLUMNS, "text", EMBEDDING, "model", "dims")
#: Formats ``--resume`` continues: the store's segments, or appended JSON lines.
RESUMABLE = ("parquet", "npy", "jsonl")


@dataclass
class EmbedConfig:
    """Everything ``biotrove embed`` needs; the CLI builds it from flags."""

    paths: list[str] = field(default_factory=list)
    model: str = "clip-o"
    recursive: bool = False
    batch_size: int = 32
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None
    arch: str | None = None
    text: bool = False  # embed the label bank's class texts instead of images
    labels: str | None = None
    text_type: str | None = None
    templates: str | None = None
    use_cache: bool = True
    output: str | None = None
    output_format: str = "parquet"
    resume: bool = False
    strict: bool = False


@dataclass
class EmbedSummary:
    """What an embed run did (for stderr and ``--summary``)."""

    kind: str = "image"  # or "text"
    n_inputs: int = 0
    n_skipped: int = 0
    n_embedded: int = 0
    n_errors: int = 0
    errors: Counter = field(default_factory=Counter)
    dims: int = 0
    seconds: float = 0.0
    labels: str | None = None
    text: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        rate = (self.n_embedded + self.n_errors) / self.seconds if self.seconds > 0 else None
        return {
            "kind": self.kind,
            "n_inputs": self.n_inputs,
            "n_skipped": self.n_skipped,
            "n_embedded": self.n_embedded,
            "n_errors": self.n_errors,
            "errors": dict(self.errors),
            "dims": self.dims,
            "seconds": round(self.seconds, 3),
            "per_s": round(rate, 2) if rate else None,
            "labels": self.labels,
            **self.text,
            "model": self.model,
        }


class EmbedJob:
    """A prepared embedding pass: inputs (or class texts) known, model loaded."""

    def __init__(self, cfg: EmbedConfig, items: Sequence[Any], loaded: Any, summary: EmbedSummary):
        self.cfg = cfg
        self.items = list(items)
        self.loaded = loaded
        self.summary = summary
        self.columns = TEXT_COLUMNS if cfg.text else IMAGE_COLUMNS
        self.dims = int(loaded.model_cfg.get("embed_dim") or 0) or _embed_dim(loaded)
        summary.dims = self.dims
        self.encoder: Any = None
        self.text_rows: list[dict[str, Any]] = []

    def store(self) -> EmbeddingStore | None:
        """The output's store, for file formats that have one (parquet, npy)."""
        if self.cfg.output and self.cfg.output_format in ("parquet", "npy"):
            key = "name" if self.cfg.text else "path"
            return EmbeddingStore(Path(self.cfg.output), self.cfg.output_format, self.columns, key)
        return None

    def run(self, progress: ProgressFn | None = None) -> Iterator[list[dict[str, Any]]]:
        """Yield each batch's rows, in input order (the class texts: one batch)."""
        if self.cfg.text:
            if progress is not None:
                progress(len(self.text_rows), len(self.text_rows))
            self.summary.n_embedded = len(self.text_rows)
            yield self.text_rows
            return
        total = len(self.items)
        if progress is not None:
            progress(0, total)
        timer = [0.0]
        done = 0
        t0 = time.perf_counter()
        try:
            for batch in encode_batches(
                self.items, self.loaded, self.encoder, self.cfg.batch_size, self.cfg.workers, timer
            ):
                yield self._rows(batch)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
        finally:
            self.summary.seconds = time.perf_counter() - t0

    def _rows(self, batch: Any) -> list[dict[str, Any]]:
        from biotrove_cli.core.evaluation.arrays import to_numpy

        feats = to_numpy(batch.features) if batch.features is not None else None
        failures = iter(batch.failures)
        rows: list[dict[str, Any]] = []
        ok_i = 0
        for key, ok in zip(batch.keys, batch.ok, strict=True):
            row = {"path": key, EMBEDDING: None, "model": self.cfg.model, "dims": self.dims}
            if ok:
                row[EMBEDDING] = feats[ok_i]  # type: ignore[index]
                row["error"] = None
                ok_i += 1
                self.summary.n_embedded += 1
            else:
                _, reason = next(failures)
                if self.cfg.strict:
                    raise InputError(
                        f"{key}: unreadable image ({reason})",
                        hint="fix or remove the file, or drop --strict to report bad files "
                        "as error rows and go on",
                    )
                log.warning("%s: skipped, %s", key, REASONS.get(reason, reason))
                self.summary.n_errors += 1
                self.summary.errors[reason] += 1
                row["error"] = reason
            rows.append(row)
        return rows


def _embed_dim(loaded: Any) -> int:
    if loaded.model is None:  # an ONNX bundle: its config says
        return int(loaded.model_cfg.get("embed_dim") or 0)
    proj = getattr(loaded.model, "text_projection", None)
    if proj is not None and getattr(proj, "ndim", 0) == 2:
        return int(proj.shape[1])
    return int(getattr(loaded.model.visual, "output_dim", 0))


def check_embed_config(cfg: EmbedConfig) -> None:
    """Refuse what cannot be before anything loads."""
    if cfg.text and cfg.paths:
        raise UsageError(
            "--text embeds the label bank's class texts and takes no PATH",
            hint="drop the paths, or drop --text to embed the images",
        )
    if not cfg.text and not cfg.paths:
        raise UsageError("no images given", hint="pass files, folders, globs or '-', or --text")
    if not cfg.text and cfg.labels:
        raise UsageError("--labels goes with --text", hint="image embeddings need no labels")
    if cfg.output_format in ("parquet", "npy") and not cfg.output:
        raise UsageError(
            f"--format {cfg.output_format} writes a file", hint="add -o embeddings.parquet"
        )
    if cfg.resume:
        if not cfg.output:
            raise UsageError("--resume needs -o FILE", hint="the file the first run wrote")
        if cfg.output_format not in RESUMABLE:
            raise UsageError(
                f"--resume continues parquet, npy or jsonl output, not {cfg.output_format}",
                hint="write -o FILE.parquet",
            )


def prepare_embed(
    cfg: EmbedConfig, stdin: Iterable[str] | None = None, items: Sequence[Any] | None = None
) -> EmbedJob:
    """Expand the inputs (or take ``items``: paths or in-memory images, from Python), skip what
    a resumed output holds, and load the model (and, with ``text``, the class texts)."""
    from biotrove_cli.core.models.load import load_model

    if items is None:
        check_embed_config(cfg)
    summary = EmbedSummary(kind="text" if cfg.text else "image")
    todo: list[Any] = []
    if not cfg.text:
        todo = list(items) if items is not None else expand_paths(cfg.paths, cfg.recursive, stdin)
        summary.n_inputs = len(todo)
        if cfg.resume:
            done = _done(cfg)
            done_abs = {os.path.abspath(p) for p in done}
            todo = [f for f in todo if f not in done and os.path.abspath(f) not in done_abs]
            summary.n_skipped = summary.n_inputs - len(todo)
    loaded = load_model(cfg.model, arch=cfg.arch, device=cfg.device)
    job = EmbedJob(cfg, todo, loaded, summary)
    summary.model = loaded.describe()
    if cfg.text:
        job.text_rows = _text_rows(cfg, loaded, summary)
        summary.n_inputs = len(job.text_rows)
    else:
        from biotrove_cli.core.evaluation.zeroshot import make_image_encoder

        job.encoder = make_image_encoder(loaded, cfg.precision)
        summary.model["precision"] = job.encoder.precision
    return job


def _done(cfg: EmbedConfig) -> set[str]:
    """The paths an earlier run's output already holds."""
    assert cfg.output is not None
    if cfg.output_format == "jsonl":
        from biotrove_cli.core.evaluation.classify_records import scan_output

        return scan_output(cfg.output, "jsonl")
    return EmbeddingStore(Path(cfg.output), cfg.output_format, IMAGE_COLUMNS).done()


def _text_rows(cfg: EmbedConfig, loaded: Any, summary: EmbedSummary) -> list[dict[str, Any]]:
    """One row per class of the label bank (``--labels``, else the model's, else inat2021)."""
    from biotrove_cli.core.evaluation.classify import ClassifyConfig, choose_bank, text_settings
    from biotrove_cli.core.evaluation.text import class_embeddings, class_prompts
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import RANKS, Rank

    ccfg = ClassifyConfig(
        paths=[], model=cfg.model, text_type=cfg.text_type, templates=cfg.templates
    )
    given = LabelBank.load(cfg.labels) if cfg.labels else None
    text = text_settings(ccfg, loaded if given is None else None)
    bank, _ = choose_bank(ccfg, loaded.labels, given)
    prompts = class_prompts(bank, Rank.SPECIES, text.text_type, text.templates)
    t0 = time.perf_counter()
    emb, _ = class_embeddings(loaded, prompts, use_cache=cfg.use_cache)
    summary.seconds = time.perf_counter() - t0
    from biotrove_cli.core.evaluation.arrays import to_numpy

    emb = to_numpy(emb)
    summary.labels = bank.source or DEFAULT_BANK
    summary.text = {"text_type": text.text_type, "templates": text.templates_name}
    species = None if bank.is_custom else bank.classes(Rank.SPECIES)
    rows = []
    for i, cls_prompts in enumerate(prompts):
        row: dict[str, Any] = {c: None for c in TEXT_COLUMNS}
        if species is None:
            row["name"] = bank.custom_labels[i]
        else:
            taxon = species.taxa[i]
            row["name"] = species.names[i]
            row["common_name"] = taxon.common_name or None
            for r in RANKS:
                row[r.value] = taxon.name_at(r) or None
        row["text"] = cls_prompts[0] if len(cls_prompts) == 1 else " | ".join(cls_prompts)
        row.update({EMBEDDING: emb[i], "model": cfg.model, "dims": int(emb.shape[1])})
        rows.append(row)
    return rows
