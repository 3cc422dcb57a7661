"""The zero-shot classifier shared by ``eval`` and ``classify``.

Two ways to score a rank:

* ``rollup``: one text embedding per species (its class prompts at species rank); species
  probabilities are ``softmax(logit_scale * cosine)`` and a higher taxon's probability is the sum
  of its species' probabilities (pybioclip's approach), through the label bank's species -> class
  index map. Species are keyed "Genus epithet" + lineage, so two "vulgaris" of different genera
  stay two classes.
* ``prompt``: per rank, the classes are the distinct taxa at that rank, each with its own prompts
  (the BioTrove reference evaluation); probabilities are a softmax over those classes.

Image features come from :class:`ImageEncoder` (fp32 on CPU by default; ``bf16`` runs a bf16 copy
of the image tower, which is several times faster on CPUs with AMX; bf16 autocast on CUDA).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from biotrove_cli.core.errors import NonFiniteError, UsageError
from biotrove_cli.core.evaluation import arrays
from biotrove_cli.core.evaluation.templates import load_templates
from biotrove_cli.core.evaluation.text import class_embeddings, class_prompts
from biotrove_cli.core.runtime import ProgressFn, resolve_precision
from biotrove_cli.core.taxonomy.captions import check_text_type
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import RANKS, Rank

DEFAULT_TEXT_TYPE = "taxon_com"
DEFAULT_TEMPLATES = "simple"


class Mode(str, Enum):
    ROLLUP = "rollup"
    PROMPT = "prompt"

    def __str__(self) -> str:
        return self.value


def parse_modes(text: str | Mode | Sequence[Mode]) -> list[Mode]:
    """``rollup``, ``prompt`` or ``both`` -> modes in a stable order."""
    if isinstance(text, Mode):
        return [text]
    if not isinstance(text, str):
        return sorted(set(text), key=lambda m: list(Mode).index(m))
    value = text.strip().lower()
    if value == "both":
        return [Mode.ROLLUP, Mode.PROMPT]
    for m in Mode:
        if m.value == value:
            return [m]
    raise UsageError(f"unknown mode {text!r}", hint="use rollup, prompt or both")


@dataclass
class TextSettings:
    """How class texts are built: the text type and the prompt templates."""

    text_type: str = DEFAULT_TEXT_TYPE
    templates_name: str = DEFAULT_TEMPLATES
    templates: tuple[str, ...] = ("a photo of {}.",)

    @classmethod
    def from_spec(cls, text_type: str, templates: str) -> TextSettings:
        name, temps = load_templates(templates)
        return cls(text_type=check_text_type(text_type), templates_name=name, templates=temps)


class ImageEncoder:
    """Batches of preprocessed images -> unit-norm float32 features on the model's device
    (a model that gives NaN or infinity is stopped: :class:`NonFiniteError`)."""

    def __init__(self, loaded: Any, precision: str = "auto"):
        import torch

        self.loaded = loaded
        self.device = loaded.device
        self.precision = resolve_precision(precision, self.device)
        self.cuda = self.device.type == "cuda"
        self.visual = loaded.model.visual
        self.params = sum(p.numel() for p in self.visual.parameters())
        self.dtype = torch.float32
        if self.precision == "bf16" and not self.cuda:
            # a bf16 copy of the image tower: oneDNN runs it on AMX/AVX512-bf16; autocast would
            # convert per op and is far slower. The text tower (and its cache) stays fp32.
            self.visual = copy.deepcopy(self.visual).to(torch.bfloat16)
            self.dtype = torch.bfloat16

    def __call__(self, images: Any) -> Any:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = images.to(self.device, non_blocking=True)
            if self.cuda and self.precision == "bf16":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = self.visual(x)
            else:
                feats = self.visual(x.to(self.dtype))
            feats = F.normalize(feats.float(), dim=-1)
        finite = torch.isfinite(feats).all(dim=-1)
        if not bool(finite.all()):
            raise NonFiniteError(
                f"{getattr(self.loaded, 'spec', 'the model')}: the image tower gives non-finite "
                f"embeddings (NaN or infinity) for {int((~finite).sum())} of {len(feats)} "
                f"images in {self.precision}",
                hint="the weights are broken or overflow at this precision: try --precision "
                "fp32, or another checkpoint",
            )
        return feats


def make_image_encoder(loaded: Any, precision: str = "auto") -> Any:
    """The image encoder of a loaded model: :class:`ImageEncoder` (PyTorch) or, for an ONNX
    bundle, :class:`~biotrove_cli.core.models.onnx.encoder.OnnxImageEncoder` (onnxruntime)."""
    if getattr(loaded, "backend", "torch") == "onnx":
        from biotrove_cli.core.models.onnx.encoder import OnnxImageEncoder

        return OnnxImageEncoder(loaded, precision)
    return ImageEncoder(loaded, precision)


@dataclass
class ZeroShotClassifier:
    """Class embeddings of a label bank, and the scoring for each rank and mode."""

    bank: LabelBank
    logit_scale: float
    species_weights: Any = None  # [S, D] unit rows (custom banks: one row per label)
    prompt_weights: dict[Rank, Any] = field(default_factory=dict)
    rollup_index: dict[Rank, Any] = field(default_factory=dict)  # [S] long, -1 = no class
    n_classes: dict[Rank, int] = field(default_factory=dict)
    cache: dict[str, bool] = field(default_factory=dict)  # what -> came from the cache
    text_seconds: float = 0.0

    def to(self, device: Any) -> ZeroShotClassifier:
        """Move the class weights and roll-up maps to ``device`` (where the image features are;
        numpy weights, the ONNX backend's, stay where they are)."""
        held = [self.species_weights, *self.prompt_weights.values(), *self.rollup_index.values()]
        if any(t is not None and arrays.is_numpy(t) for t in held):
            return self
        if self.species_weights is not None:
            self.species_weights = self.species_weights.to(device)
        self.prompt_weights = {r: w.to(device) for r, w in self.prompt_weights.items()}
        self.rollup_index = {r: i.to(device) for r, i in self.rollup_index.items()}
        return self

    @property
    def is_custom(self) -> bool:
        return self.bank.is_custom

    def species_probs(self, feats: Any) -> Any:
        """[B, S] species (or custom label) probabilities."""
        return arrays.softmax_scores(feats, self.species_weights, self.logit_scale)

    def rollup(self, species_probs: Any, rank: Rank) -> Any:
        """[B, C] probabilities of the classes at ``rank``: sums of their species' probabilities."""
        if rank is Rank.SPECIES or self.is_custom:
            return species_probs
        return arrays.sum_columns(species_probs, self.rollup_index[rank], self.n_classes[rank])

    def prompt_probs(self, feats: Any, rank: Rank) -> Any:
        """[B, C] probabilities over the distinct taxa at ``rank``, each with its own prompts."""
        return arrays.softmax_scores(feats, self.prompt_weights[rank], self.logit_scale)

    def probs(self, feats: Any, rank: Rank, mode: Mode, species_probs: Any = None) -> Any:
        if mode is Mode.PROMPT and not self.is_custom:
            if rank is Rank.SPECIES and species_probs is not None:
                return species_probs  # the same classes and prompts as the species rollup
            return self.prompt_probs(feats, rank)
        if species_probs is None:
            species_probs = self.species_probs(feats)
        return self.rollup(species_probs, rank)


def _logit_scale(loaded: Any) -> float:
    """The model's learned temperature, at most 100 (an ONNX bundle records it)."""
    if getattr(loaded, "backend", "torch") == "onnx":
        return min(float(loaded.logit_scale), 100.0)
    scale = getattr(loaded.model, "logit_scale", None)
    if scale is None:
        return 100.0
    value = float(scale.detach().float().exp().item())
    return min(value, 100.0)


def _select_rows(full_bank: LabelBank, full: Any, bank: LabelBank) -> Any:
    """Rows of ``full`` (embeddings of ``full_bank``'s species) for the species of ``bank``."""
    index = {t.species_key: i for i, t in enumerate(full_bank.taxa)}
    rows = [index[t.species_key] for t in bank.taxa]
    return full[arrays.index(rows, arrays.is_numpy(full))]


def build_classifier(
    loaded: Any,
    bank: LabelBank,
    *,
    ranks: Sequence[Rank] = RANKS,
    modes: Sequence[Mode] = (Mode.ROLLUP,),
    text: TextSettings | None = None,
    use_cache: bool = True,
    embed_bank: LabelBank | None = None,
    progress: ProgressFn | None = None,
    batch_size: int = 256,
    memo: dict[tuple, tuple[Any, bool]] | None = None,
) -> ZeroShotClassifier:
    """Encode (or fetch from the cache) every class text the ranks and modes need.

    Args:
        embed_bank: a larger bank that ``bank`` is a subset of (``--within``, a checklist): its
            species embeddings are cached and the subset's rows are taken from them, so a
            restriction never re-encodes the full label bank's prompts.
        memo: class texts this run already encoded, by their prompts (an eval's text types
            share many: above species, sci, com and sci_com all name the taxon alone); filled
            with the new ones.
    """

    def embed(prompts: list[list[str]]) -> tuple[Any, bool]:
        key = tuple(tuple(p) for p in prompts)
        if memo is not None and key in memo:
            return memo[key][0], True
        emb, hit = class_embeddings(
            loaded, prompts, use_cache=use_cache, batch_size=batch_size, progress=progress
        )
        if memo is not None:
            memo[key] = (emb, hit)
        return emb, hit

    text = text or TextSettings()
    onnx = getattr(loaded, "backend", "torch") == "onnx"  # numpy weights and maps
    t0 = time.perf_counter()
    clf = ZeroShotClassifier(bank=bank, logit_scale=_logit_scale(loaded))
    modes = list(modes)
    need_species = Mode.ROLLUP in modes or Rank.SPECIES in ranks or bank.is_custom
    if need_species:
        source = embed_bank if (embed_bank is not None and not bank.is_custom) else bank
        emb, hit = embed(class_prompts(source, Rank.SPECIES, text.text_type, text.templates))
        if source is not bank:
            emb = _select_rows(source, emb, bank)
        clf.species_weights = arrays.as_float(emb)
        clf.cache["species"] = hit
    if not bank.is_custom:
        for rank in RANKS:
            rc = bank.classes(rank)
            clf.n_classes[rank] = len(rc)
            clf.rollup_index[rank] = arrays.index(rc.species_to_class, onnx)
        if Mode.PROMPT in modes:
            for rank in ranks:
                if rank is Rank.SPECIES and clf.species_weights is not None:
                    clf.prompt_weights[rank] = clf.species_weights
                    continue
                prompts = class_prompts(bank, rank, text.text_type, text.templates)
                if not prompts:
                    continue
                emb, hit = embed(prompts)
                clf.prompt_weights[rank] = arrays.as_float(emb)
                clf.cache[f"prompt:{rank.value}"] = hit
    else:
        clf.n_classes[Rank.SPECIES] = len(bank)
    clf.text_seconds = time.perf_counter() - t0
    return clf.to(loaded.device)
