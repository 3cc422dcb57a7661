"""The public Python API, for notebooks and scripts (``from biotrove_cli import Classifier``).

The same engine as the commands: ``Classifier.predict`` runs ``biotrove classify``'s pass,
``embed`` is ``biotrove embed``, ``evaluate`` is ``biotrove eval`` and ``load_model`` loads
whatever ``--model`` accepts (BioTrove-CLIP presets download themselves on first use). Images
are file paths (files, folders, globs), PIL images or numpy arrays. Results are
:class:`Records`: a list of dicts (the rows the CLI writes), with ``.to_pandas()`` and the run's
``.summary``. Progress is a ``tqdm.auto`` bar (a widget in notebooks), off with
``progress=False``. Errors are :class:`BiotroveError` subclasses with a ``hint``; nothing here
exits the interpreter. torch loads on first use, not at import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import BiotroveError, UsageError
from biotrove_cli.core.models.spec import backend_of
from biotrove_cli.core.runtime import resolve_device, tqdm_progress
from biotrove_cli.core.taxonomy.rank import Rank

__all__ = ["BiotroveError", "Classifier", "Records", "embed", "evaluate", "load_model"]


class Records(list):
    """Records (dicts), in input order, plus what the run says about itself (``summary``)."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), summary: dict | None = None):
        super().__init__(rows)
        self.summary: dict[str, Any] = dict(summary or {})

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the records (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise BiotroveError(
                "to_pandas() needs pandas, which is not installed", hint="pip install pandas"
            ) from None
        return pd.DataFrame.from_records(list(self))

    def embeddings(self) -> Any:
        """The ``embedding`` column of the rows that have one, as a float32 [N, dims] array."""
        import numpy as np

        rows = [r["embedding"] for r in self if r.get("embedding") is not None]
        if not rows:
            return np.zeros((0, int(self.summary.get("dims") or 0)), dtype=np.float32)
        return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


def _items(images: Any, recursive: bool) -> list[Any]:
    """Inputs as the engine takes them: strings and paths expanded like the CLI's PATH
    arguments (folders, globs), image objects as they are."""
    from biotrove_cli.core.evaluation.classify_inputs import expand_paths

    if images is None:
        raise UsageError("no images given", hint="pass paths, PIL images or numpy arrays")
    if isinstance(images, (str, Path)) or _is_one_image(images):
        images = [images]
    try:
        items = list(images)
    except TypeError:
        raise UsageError(
            f"images must be paths, PIL images or numpy arrays, not {type(images).__name__}"
        ) from None
    out: list[Any] = []
    for item in items:
        if isinstance(item, (str, Path)):
            out.extend(expand_paths([str(item)], recursive))
        else:
            out.append(item)
    return out


def _is_one_image(obj: Any) -> bool:
    """A PIL image, or an array of one image (HxW or HxWxC; NxHxWxC is several)."""
    return hasattr(obj, "getpixel") or getattr(obj, "ndim", 0) in (2, 3)


def load_model(model: str = "clip-o", *, device: str = "auto", arch: str | None = None) -> Any:
    """Load a model ready for inference (a ``LoadedModel``: ``.model`` is the open_clip model,
    ``.preprocess`` and ``.tokenizer`` beside it, ``.labels`` its label bank, if any).

    Args:
        model: anything ``--model`` accepts: clip-o/clip-b/clip-m, a checkpoint, a bundle or
            run folder, ``hf-hub:org/repo`` or ``ARCH:TAG``.
        device: cpu, cuda, cuda:N, mps or auto.
        arch: the open_clip architecture of bare weights, when it cannot be inferred.
    """
    from biotrove_cli.core.models.load import load_model as _load

    where = resolve_device(device, option="device", backend=backend_of(model))
    return _load(model, arch=arch, device=where)


class Classifier:
    """A model and its label bank's class embeddings, loaded once, to classify many images.

    Example::

        from biotrove_cli import Classifier

        clf = Classifier("clip-o", labels="inat2021")
        records = clf.predict(["photos/"], rank="species", k=5)
        records.to_pandas()

    Args:
        model: anything ``--model`` accepts (default: BioTrove-CLIP-O, downloaded on first use).
        labels: a shipped bank (``inat2021``, ``demo``), a label table, a shard folder or a
            ``.txt`` list of names; None: the model's own bank, else ``inat2021``.
        device: cpu, cuda, cuda:N, mps or auto.
        within, checklist: keep the species under a taxon / named by a checklist.
        precision, batch_size, workers, text_type, templates, use_cache, arch: as the
            ``biotrove classify`` flags of the same names.
        progress: a progress bar while images are classified (default for :meth:`predict`).
    """

    def __init__(
        self,
        model: str = "clip-o",
        labels: str | Path | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        within: str | None = None,
        checklist: str | Path | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        text_type: str | None = None,
        templates: str | None = None,
        use_cache: bool = True,
        arch: str | None = None,
        progress: bool = True,
    ):
        from biotrove_cli.core.evaluation.classify import ClassifyConfig, build_engine, check_flags
        from biotrove_cli.core.taxonomy.labelbank import LabelBank

        self._cfg = ClassifyConfig(
            paths=[],
            model=str(model),
            labels=str(labels) if labels is not None else None,
            within=within,
            checklist=str(checklist) if checklist is not None else None,
            batch_size=batch_size,
            device=resolve_device(device, option="device", backend=backend_of(model)),
            precision=precision,
            workers=workers,
            text_type=text_type,
            templates=templates,
            use_cache=use_cache,
            arch=arch,
        )
        check_flags(self._cfg)
        given = LabelBank.load(self._cfg.labels) if self._cfg.labels else None
        self._engine = build_engine(self._cfg, given)
        self.progress = progress

    @property
    def model(self) -> Any:
        """The loaded model (``LoadedModel``)."""
        return self._engine.loaded

    @property
    def labels(self) -> Any:
        """The label bank classified into (``LabelBank``)."""
        return self._engine.bank

    def predict(
        self,
        images: Any,
        rank: str | Rank = "species",
        k: int = 5,
        min_confidence: float | None = None,
        *,
        recursive: bool = False,
        strict: bool = False,
        progress: bool | None = None,
    ) -> Records:
        """The top ``k`` classes at ``rank`` of each image, with probabilities.

        Args:
            images: a path (file, folder, glob), a PIL image, a numpy array (HxWxC, or NxHxWxC
                for several), or a list of them.
            rank: kingdom ... species (higher ranks sum their species' probabilities).
            min_confidence: one row per image instead, at the deepest rank whose probability
                reaches it.
            strict: raise at the first unreadable image instead of an error row.

        Returns:
            The rows ``biotrove classify`` writes: path, rank, prediction, name, common_name,
            lineage, score, error (None when the image was classified).
        """
        from biotrove_cli.core.evaluation.classify import check_flags

        cfg = dataclasses.replace(
            self._cfg,
            rank=Rank.parse(rank),
            k=k,
            min_confidence=min_confidence,
            recursive=recursive,
            strict=strict,
        )
        check_flags(cfg)
        items = _items(images, recursive)
        job = self._engine.job(cfg, items)
        show = self.progress if progress is None else progress
        records = Records()
        with tqdm_progress("classify", "image", enabled=show) as bar:
            for batch in job.run(bar):
                records.extend(batch)
        records.summary = job.summary.as_dict()
        return records


def embed(
    images: Any = None,
    *,
    model: str = "clip-o",
    text: bool = False,
    labels: str | Path | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 32,
    workers: int | None = None,
    recursive: bool = False,
    strict: bool = False,
    arch: str | None = None,
    progress: bool = True,
) -> Records:
    """L2-normalised embeddings: one row per image, or (``text=True``) per class of a bank.

    Rows: ``path``, ``embedding`` (a float32 numpy vector, None for an unreadable image),
    ``model``, ``dims``, ``error``; with ``text``: ``name``, ``common_name``, lineage, ``text``,
    ``embedding``, ``model``, ``dims``. ``Records.embeddings()`` stacks them into an array.
    """
    from biotrove_cli.core.evaluation.embed import EmbedConfig, prepare_embed

    if text and images is not None:
        raise UsageError("text=True embeds the label bank's class texts; pass no images")
    cfg = EmbedConfig(
        model=str(model),
        recursive=recursive,
        batch_size=batch_size,
        device=resolve_device(device, option="device", backend=backend_of(model)),
        precision=precision,
        workers=workers,
        arch=arch,
        text=text,
        labels=str(labels) if labels is not None else None,
        strict=strict,
    )
    # items given: the CLI's checks of PATH arguments and output files do not apply
    job = prepare_embed(cfg, items=[] if text else _items(images, recursive))
    records = Records()
    with tqdm_progress("embed", "image", enabled=progress and not text) as bar:
        for batch in job.run(bar):
            records.extend(batch)
    records.summary = job.summary.as_dict()
    return records


def evaluate(
    data: str | Path,
    model: str | Sequence[str] = "clip-o",
    *,
    device: str = "auto",
    progress: bool = True,
    **options: Any,
) -> Records:
    """Zero-shot accuracy at every rank (``biotrove eval``): one record per model x mode x
    rank; ``.summary`` is the document ``--summary`` writes (data, labels, models, timings).

    Args:
        data: a shard folder, split folder or metadata table (with ``images=`` for photo ids).
        model: one model or several to compare.
        options: the other ``EvalConfig`` fields: images, split, labels, ranks, modes, limit,
            batch_size, precision, workers, text_type, templates, per_class, plot...
    """
    from biotrove_cli.core.evaluation.config import EvalConfig
    from biotrove_cli.core.evaluation.run import run_eval

    models = [model] if isinstance(model, (str, Path)) else list(model)
    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(
            f"evaluate() got unknown options: {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(fields - {'models', 'data', 'device'}))}",
        )
    if isinstance(options.get("ranks"), str):
        options["ranks"] = Rank.parse_list(options["ranks"])
    if isinstance(options.get("modes"), str):
        from biotrove_cli.core.evaluation.zeroshot import parse_modes

        options["modes"] = parse_modes(options["modes"])
    cfg = EvalConfig(
        models=[str(m) for m in models],
        data=str(data),
        device=resolve_device(device, option="device"),
        **options,
    )
    with tqdm_progress("eval", "image", enabled=progress) as bar:
        payload = run_eval(cfg, bar)
    return Records(payload["records"], summary=payload["document"])
