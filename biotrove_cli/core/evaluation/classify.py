"""``biotrove classify``: folders of field photos -> predictions, streamed as they arrive.

Paths are files, folders (``--recursive``), globs or ``-`` (paths on stdin); from Python, PIL
images and arrays too. The image pass (:mod:`image_pass`, shared with ``embed``) decodes and
encodes them in batches; each batch's records are yielded at once so a caller can stream them.
A :class:`ClassifyEngine` (model, label bank, class embeddings) serves every pass of the CLI and
of the Python API's ``Classifier``.
Scores are probabilities: species probabilities from the shared zero-shot classifier, rolled up
into higher ranks by summing. ``--min-confidence P`` reports, per image, the deepest rank whose
best rolled-up probability reaches P.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import InputError, UsageError
from biotrove_cli.core.evaluation import arrays
from biotrove_cli.core.evaluation.classify_inputs import expand_paths
from biotrove_cli.core.evaluation.classify_records import (
    STREAM_FORMATS,
    error_row,
    prediction_row,
    scan_output,
)
from biotrove_cli.core.evaluation.image_pass import REASONS, EncodedBatch, encode_batches
from biotrove_cli.core.evaluation.zeroshot import (
    DEFAULT_TEMPLATES,
    DEFAULT_TEXT_TYPE,
    Mode,
    TextSettings,
    ZeroShotClassifier,
    build_classifier,
    make_image_encoder,
)
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.banks import BANKS, DEFAULT_BANK
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

log = logging.getLogger("biotrove")


@dataclass
class ClassifyConfig:
    """Everything ``biotrove classify`` needs; the CLI builds it from flags."""

    paths: list[str]
    model: str = "clip-o"
    labels: str | None = None
    within: str | None = None
    checklist: str | None = None
    rank: Rank = Rank.SPECIES
    k: int = 5
    min_confidence: float | None = None
    recursive: bool = False
    batch_size: int = 32
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None  # None: auto (see runtime.resolve_workers)
    # None: the bundle's own (what its precomputed class embeddings encode), else the defaults
    text_type: str | None = None
    templates: str | None = None
    use_cache: bool = True
    output: str | None = None
    output_format: str = "csv"
    resume: bool = False
    strict: bool = False
    arch: str | None = None


# -- labels -------------------------------------------------------------------------------------
def text_settings(cfg: ClassifyConfig, loaded: Any = None) -> TextSettings:
    """The class-text settings: the flags; for those not given, the ones a bundle's class
    embeddings were encoded with (so they are used as they are), else the defaults."""
    meta: dict[str, Any] = {}
    pre = getattr(loaded, "class_embeddings", None) or {}
    if pre.get("meta", {}).get("text_type") not in (None, "", "custom"):
        meta = pre["meta"]
    text_type = cfg.text_type or meta.get("text_type") or DEFAULT_TEXT_TYPE
    if cfg.templates:
        return TextSettings.from_spec(text_type, cfg.templates)
    if meta.get("template_strings"):
        try:
            temps = tuple(str(t) for t in json.loads(meta["template_strings"]))
        except ValueError:
            temps = ()
        if temps and all(t.count("{}") == 1 for t in temps):
            base = TextSettings.from_spec(text_type, DEFAULT_TEMPLATES)
            return TextSettings(base.text_type, meta.get("templates") or "bundle", temps)
    return TextSettings.from_spec(text_type, DEFAULT_TEMPLATES)


def choose_bank(cfg: ClassifyConfig, model_bank: LabelBank | None, given: LabelBank | None):
    """(bank to classify into, the full bank its embeddings come from).

    Without ``--labels``, the model's own bank; a model with none (a bare checkpoint, an
    open_clip tag) gets the shipped ``inat2021`` bank, and the log says so.
    """
    bank = given if given is not None else model_bank
    if bank is None:
        default = BANKS[DEFAULT_BANK]
        log.info(
            f"{cfg.model} carries no label bank: classifying into {default.name} "
            f"({default.description}); --labels changes it"
        )
        bank = LabelBank.load(default.name)
    full = bank
    if bank.is_custom:
        for flag, value in (("--within", cfg.within), ("--checklist", cfg.checklist)):
            if value:
                raise UsageError(
                    f"{flag} needs a label bank with lineage; custom labels have none",
                    hint="use a metadata table for --labels",
                )
        return bank, full
    if cfg.within:
        bank = bank.within(cfg.within)
    if cfg.checklist:
        bank = bank.restrict(LabelBank.load(cfg.checklist))
    return bank, full


def check_flags(cfg: ClassifyConfig) -> None:
    """Refuse impossible values of -k, --min-confidence, --resume, --text-type, --templates
    (before anything is loaded)."""
    if cfg.k < 1:
        raise UsageError(f"-k must be at least 1, got {cfg.k}")
    if cfg.min_confidence is not None and not 0.0 <= cfg.min_confidence <= 1.0:
        raise UsageError(
            f"--min-confidence must be in [0, 1], got {cfg.min_confidence}",
            hint="a probability, e.g. 0.8 (0: always the deepest rank)",
        )
    if cfg.resume:
        if not cfg.output or cfg.output == "-":
            raise UsageError("--resume needs -o FILE", hint="the file the first run wrote")
        if cfg.output_format not in STREAM_FORMATS:
            raise UsageError(
                f"--resume appends to csv or jsonl files, not {cfg.output_format}",
                hint="write -o FILE.csv or FILE.jsonl",
            )
    text_settings(cfg)  # bad --text-type / --templates fail before any work


def check_bank(cfg: ClassifyConfig, bank: LabelBank) -> None:
    """Refuse a rank or --min-confidence the label bank cannot answer."""
    if bank.is_custom:
        if cfg.rank is not Rank.SPECIES:
            raise UsageError(
                f"--rank {cfg.rank.value}: custom labels have no ranks",
                hint="leave --rank out, or use a label table with lineage",
            )
        if cfg.min_confidence is not None:
            raise UsageError(
                "--min-confidence climbs the taxonomy; custom labels have none",
                hint="use a label table with lineage columns",
            )
    elif len(bank.classes(cfg.rank)) == 0:
        raise InputError(
            f"the label bank names no {cfg.rank.value}",
            hint="pick another --rank, or labels with that rank filled",
        )


@dataclass
class ClassifyEngine:
    """A loaded model with its class embeddings: what every classification of a config shares
    (``biotrove classify`` makes one per run; the Python API's Classifier keeps one)."""

    loaded: Any
    clf: ZeroShotClassifier
    encoder: Any  # ImageEncoder or OnnxImageEncoder (zeroshot.make_image_encoder)
    text: TextSettings

    @property
    def bank(self) -> LabelBank:
        return self.clf.bank

    def summary(self, n_inputs: int) -> ClassifySummary:
        """A fresh summary for a pass over ``n_inputs`` inputs."""
        bank = self.clf.bank
        return ClassifySummary(
            n_inputs=n_inputs,
            labels=bank.source,
            n_labels=len(bank),
            text={"text_type": self.text.text_type, "templates": self.text.templates_name},
            text_cached=bool(self.clf.cache.get("species")),
            model={**self.loaded.describe(), "precision": self.encoder.precision},
        )

    def job(self, cfg: ClassifyConfig, items: list[Any]) -> ClassifyJob:
        """A pass of this engine over ``items`` (paths or in-memory images) as ``cfg`` says."""
        check_bank(cfg, self.clf.bank)
        return ClassifyJob(
            cfg, items, self.loaded, self.clf, self.encoder, self.summary(len(items))
        )


def build_engine(cfg: ClassifyConfig, given: LabelBank | None = None) -> ClassifyEngine:
    """Load the model, choose the label bank (``given``: the loaded ``--labels``), and encode
    (or fetch from the bundle or the cache) its class texts."""
    from biotrove_cli.core.models.load import load_model

    if given is not None:
        check_bank(cfg, given)  # before the model loads
    loaded = load_model(cfg.model, arch=cfg.arch, device=cfg.device)
    text = text_settings(cfg, loaded if given is None else None)
    bank, full = choose_bank(cfg, loaded.labels, given)
    check_bank(cfg, bank)
    clf = build_classifier(
        loaded,
        bank,
        ranks=[cfg.rank],
        modes=[Mode.ROLLUP],
        text=text,
        use_cache=cfg.use_cache,
        embed_bank=full if full is not bank else None,
    )
    return ClassifyEngine(loaded, clf, make_image_encoder(loaded, cfg.precision), text)


# -- the job --------------------------------------------------------------------------------------
@dataclass
class ClassifySummary:
    """What a classify run did: counts, time, labels, class texts and model (for stderr and the
    JSON document)."""

    n_inputs: int = 0
    n_skipped: int = 0  # already in the output (--resume)
    n_classified: int = 0
    n_errors: int = 0
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    labels: str = ""
    n_labels: int = 0
    text_cached: bool = False
    text: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float | None:
        """Images (classified or not) per second of the image pass."""
        n = self.n_classified + self.n_errors
        return n / self.seconds if self.seconds > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {
            "n_inputs": self.n_inputs,
            "n_skipped": self.n_skipped,
            "n_classified": self.n_classified,
            "n_errors": self.n_errors,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 2) if self.images_per_s else None,
            "labels": self.labels,
            "n_labels": self.n_labels,
            "text_cached": self.text_cached,
            **self.text,
            "model": self.model,
        }


class ClassifyJob:
    """A prepared classification: inputs expanded, model and class embeddings loaded."""

    def __init__(
        self,
        cfg: ClassifyConfig,
        files: list[str],
        loaded: Any,
        clf: ZeroShotClassifier,
        encoder: Any,
        summary: ClassifySummary,
    ):
        self.cfg = cfg
        self.files = files
        self.loaded = loaded
        self.clf = clf
        self.encoder = encoder
        self.summary = summary
        self.bank = clf.bank
        #: called with each batch's records as they are yielded (``classify --report`` keeps them)
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    def _predict(self, feats: Any, paths: list[str]) -> list[list[dict[str, Any]]]:
        """Rows per image for a batch of features."""
        cfg = self.cfg
        clf = self.clf
        sp = clf.species_probs(feats)
        out: list[list[dict[str, Any]]] = [[] for _ in paths]
        if clf.is_custom:
            k = min(cfg.k, sp.shape[1])
            vals, idx = arrays.topk(sp, k)
            for i, path in enumerate(paths):
                out[i] = [
                    prediction_row(self.bank, path, None, j + 1, idx[i][j], vals[i][j])
                    for j in range(k)
                ]
            return out
        if cfg.min_confidence is not None:
            ranks = [r for r in reversed(RANKS) if r <= cfg.rank]
            best = {}
            for r in ranks:
                best[r] = arrays.row_max(clf.rollup(sp, r))
            for i, path in enumerate(paths):
                for r in ranks:
                    v, ix = best[r][0][i], best[r][1][i]
                    if v >= cfg.min_confidence:
                        out[i] = [prediction_row(self.bank, path, r, 1, ix, v)]
                        break
                else:
                    row = error_row(path, "none", "")  # no rank reaches the threshold
                    row["score"] = round(best[Rank.KINGDOM][0][i], 6)
                    out[i] = [row]
            return out
        probs = clf.rollup(sp, cfg.rank)
        k = min(cfg.k, probs.shape[1])
        vals, idx = arrays.topk(probs, k)
        for i, path in enumerate(paths):
            out[i] = [
                prediction_row(self.bank, path, cfg.rank, j + 1, idx[i][j], vals[i][j])
                for j in range(k)
            ]
        return out

    def run(self, progress: ProgressFn | None = None) -> Iterator[list[dict[str, Any]]]:
        """Classify every input; yields each batch's records, in input order."""
        cfg = self.cfg
        if cfg.output and not cfg.resume and cfg.output_format in STREAM_FORMATS:
            # the new run replaces the file; it is written in place so that an interrupted run
            # can be resumed with --resume
            out = Path(cfg.output)
            if out.is_file():
                out.unlink()
        total = len(self.files)
        if progress is not None:
            progress(0, total)
        timer = [0.0]
        done = 0
        try:
            for batch in encode_batches(
                self.files, self.loaded, self.encoder, cfg.batch_size, cfg.workers, timer
            ):
                for records in self._records(batch):
                    for listener in self.listeners:
                        listener(records)
                    yield records
                done += len(batch)
                self.summary.seconds = timer[0]
                if progress is not None:
                    progress(done, total)
        finally:
            self.summary.seconds = timer[0]

    def _records(self, batch: EncodedBatch) -> Iterator[list[dict[str, Any]]]:
        """The batch's records in input order (yielded once); error rows for unreadable files,
        or, with ``--strict``, the records before the first one and an error."""
        cfg = self.cfg
        ok_keys = [k for k, ok in zip(batch.keys, batch.ok, strict=True) if ok]
        rows = self._predict(batch.features, ok_keys) if ok_keys else []
        failures = iter(batch.failures)
        records: list[dict[str, Any]] = []
        ok_i = 0
        for is_ok in batch.ok:
            if is_ok:
                records.extend(rows[ok_i])
                ok_i += 1
                self.summary.n_classified += 1
                continue
            path, reason = next(failures)
            if cfg.strict:
                yield records
                raise InputError(
                    f"{path}: unreadable image ({reason})",
                    hint="fix or remove the file, or drop --strict to report bad files "
                    "as error rows and go on",
                )
            log.warning("%s: skipped, %s", path, REASONS.get(reason, reason))
            self.summary.n_errors += 1
            self.summary.errors[reason] += 1
            records.append(error_row(path, cfg.rank.value, reason))
        yield records


def prepare_classify(cfg: ClassifyConfig, stdin: Iterable[str] | None = None) -> ClassifyJob:
    """Expand the inputs, read what a resumed output holds, load labels, model and class texts.

    Cheap checks come first (paths, labels, flags) so a typo fails before the model loads.
    """
    check_flags(cfg)
    files = expand_paths(cfg.paths, cfg.recursive, stdin)
    n_inputs = len(files)
    if cfg.resume:
        done = scan_output(cfg.output, cfg.output_format)  # type: ignore[arg-type]
        if done:
            done_abs = {os.path.abspath(p) for p in done}
            files = [f for f in files if f not in done and os.path.abspath(f) not in done_abs]
    given = LabelBank.load(cfg.labels) if cfg.labels else None
    job = build_engine(cfg, given).job(cfg, files)
    job.summary.n_inputs = n_inputs
    job.summary.n_skipped = n_inputs - len(files)
    return job
