"""Class text embeddings for a label bank at a rank, cached on disk.

Prompts come from :func:`captions.caption_body` (the text type's class text at that rank) put
into each template; a class embedding is the normalised mean of its normalised template
embeddings (open_clip's zero-shot recipe). Embeddings are cached under
``$BIOTROVE_HOME/cache/text`` keyed by the text tower's fingerprint (weights, activation, model
config, tokenizer and context length: :func:`loaded.text_tower_fingerprint`) + the exact
prompts (which hold the templates and the text type), so a second ``eval`` or ``classify`` over
the same 10,000-species bank does not re-encode them; a corrupt cache entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biotrove_cli.core.errors import NonFiniteError
from biotrove_cli.core.evaluation import arrays
from biotrove_cli.core.models import registry
from biotrove_cli.core.runtime import ProgressFn
from biotrove_cli.core.taxonomy.captions import caption_body, check_text_type
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import Rank

log = logging.getLogger("biotrove")
CACHE_VERSION = "2"  # 2: the fingerprint covers more than the weights


def class_prompts(
    bank: LabelBank, rank: Rank, text_type: str, templates: Sequence[str]
) -> list[list[str]]:
    """Prompts per class of ``bank`` at ``rank`` (custom banks: per label)."""
    if bank.is_custom:
        return [[t.format(label) for t in templates] for label in bank.custom_labels]
    text_type = check_text_type(text_type)
    rc = bank.classes(rank)
    return [
        [t.format(caption_body(taxon, text_type, rank)) for t in templates] for taxon in rc.taxa
    ]


def cache_root() -> Path:
    return registry.cache_dir() / "text"


def cache_key(fingerprint: str, prompts: list[list[str]]) -> str:
    """The cache key of a text tower (its fingerprint) and the exact prompts of every class."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}\n{fingerprint}\n".encode())
    for cls in prompts:
        h.update(("\x1e".join(cls) + "\x1d").encode())
    return h.hexdigest()


def _read_cache(path: Path, n_classes: int, numpy: bool = False) -> Any | None:
    from safetensors import SafetensorError

    if numpy:
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    try:
        emb = load_file(str(path))["embeddings"]
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as exc:
        log.warning(
            "text-embedding cache entry %s is unreadable (%s); rebuilding it", path.name, exc
        )
        return None
    if emb.ndim != 2 or emb.shape[0] != n_classes:
        log.warning("text-embedding cache entry %s has the wrong shape; rebuilding it", path.name)
        return None
    return emb


def bundled_embeddings(loaded: Any, key: str, n_classes: int) -> Any | None:
    """Embeddings precomputed by ``biotrove export --labels``, when they are for these prompts.

    A bundle's ``class_embeddings.safetensors`` holds an ``embeddings`` tensor and, in its
    metadata, the ``prompts_key`` (:func:`cache_key` of the text tower and prompts) it encodes.
    """
    pre = getattr(loaded, "class_embeddings", None)
    if not pre:
        return None
    meta = pre.get("meta") or {}
    emb = (pre.get("tensors") or {}).get("embeddings")
    if emb is None or meta.get("prompts_key") != key or emb.shape[0] != n_classes:
        return None
    return arrays.as_float(emb)


def trimmed_text_encoder(model: Any) -> Callable[[Any], Any] | None:
    """``encode_text`` that runs only up to the longest prompt of a batch, or None.

    open_clip's CLIP text tower attends causally and pools at the end-of-text token, so the
    features there depend on the tokens before it only: the padding after the batch's last
    end-of-text token changes nothing but the cost (taxonomic prompts fill about a third of the
    77-token context). Other text towers (HF, last/first pooling) get None.
    """
    import torch

    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    pool = getattr(model, "text_pool_type", None)
    mask = getattr(model, "attn_mask", None)
    if type(model).__name__ != "CLIP" or pool not in ("argmax", "eos") or mask is None:
        return None
    if not all(hasattr(model, a) for a in needed):
        return None
    eos_id = getattr(model, "text_eos_id", None)
    if pool == "eos" and eos_id is None:
        return None
    # the mask must be causal (-inf above the diagonal), or cutting would change attention
    causal = torch.triu(torch.ones_like(mask, dtype=torch.bool), diagonal=1)
    if not (torch.isinf(mask[causal]).all() and (mask[~causal] == 0).all()):
        return None

    def encode(tokens: Any) -> Any:
        if pool == "argmax":
            ends = tokens.argmax(dim=-1)
        else:
            ends = (tokens == eos_id).int().argmax(dim=-1)
        n = int(ends.max().item()) + 1
        t = tokens[:, :n]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(t).to(cast) + model.positional_embedding[:n].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), ends]
        proj = model.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x

    return encode


def encode_prompts(
    loaded: Any,
    prompts: list[list[str]],
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    trim: bool = False,
) -> Any:
    """Encode every class's prompts; returns a float32 CPU tensor [classes, dim], unit rows.

    Args:
        trim: batch prompts of similar token length and encode each batch only up to its
            longest prompt (:func:`trimmed_text_encoder`): the same embeddings (to float
            rounding), several times faster for taxonomic prompts; ignored for text towers it
            does not apply to.
    """
    if getattr(loaded, "backend", "torch") == "onnx":
        return _encode_prompts_onnx(loaded, prompts, batch_size, progress)
    import torch
    import torch.nn.functional as F

    flat = [p for cls in prompts for p in cls]
    owners = torch.tensor([i for i, cls in enumerate(prompts) for _ in cls])
    device = loaded.device
    model = loaded.model
    fast = trimmed_text_encoder(model) if trim else None
    order = list(range(len(flat)))
    tokens_all = None
    if fast is not None and flat:
        tokens_all = loaded.tokenizer(flat)
        lengths = (tokens_all != 0).sum(dim=-1)
        order = torch.argsort(lengths, stable=True).tolist()
    out = []
    with torch.inference_mode():
        for start in range(0, len(flat), batch_size):
            idx = order[start : start + batch_size]
            if tokens_all is not None:
                tokens = tokens_all[idx].to(device)
            else:
                tokens = loaded.tokenizer([flat[i] for i in idx]).to(device)
            encode = fast or model.encode_text
            if device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    feats = encode(tokens)
            else:
                feats = encode(tokens)
            out.append(F.normalize(feats.float(), dim=-1).cpu())
            if progress is not None:
                progress(min(start + batch_size, len(flat)), len(flat))
    feats = torch.cat(out) if out else torch.zeros(0, 1)
    if order != list(range(len(flat))):
        unsorted = torch.empty_like(feats)
        unsorted[torch.tensor(order)] = feats
        feats = unsorted
    dim = feats.shape[1]
    summed = torch.zeros(len(prompts), dim).index_add_(0, owners, feats)
    return F.normalize(summed, dim=-1)


def _encode_prompts_onnx(
    loaded: Any, prompts: list[list[str]], batch_size: int, progress: ProgressFn | None
) -> Any:
    """:func:`encode_prompts` through an ONNX bundle's text encoder (numpy)."""
    import numpy as np

    flat = [p for cls in prompts for p in cls]
    owners = np.asarray([i for i, cls in enumerate(prompts) for _ in cls], dtype=np.int64)
    out = []
    for start in range(0, len(flat), batch_size):
        out.append(loaded.encode_texts(flat[start : start + batch_size]))
        if progress is not None:
            progress(min(start + batch_size, len(flat)), len(flat))
    if not out:
        return np.zeros((len(prompts), 1), dtype=np.float32)
    feats = arrays.normalize_rows(np.concatenate(out).astype(np.float32))
    summed = np.zeros((len(prompts), feats.shape[1]), dtype=np.float32)
    np.add.at(summed, owners, feats)
    return arrays.normalize_rows(summed)


def check_finite_embeddings(loaded: Any, emb: Any) -> None:
    """Refuse class embeddings holding NaN or infinity (every score would be noise).

    Raises:
        NonFiniteError: naming the model and how many classes are affected.
    """
    bad = arrays.nonfinite_rows(emb)
    if bad:
        raise NonFiniteError(
            f"{getattr(loaded, 'spec', 'the model')}: the text tower gives non-finite "
            f"embeddings (NaN or infinity) for {bad} of {len(emb)} classes",
            hint="the model's weights are broken; use another checkpoint",
        )


def class_embeddings(
    loaded: Any,
    prompts: list[list[str]],
    *,
    use_cache: bool = True,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    trim: bool = True,
) -> tuple[Any, bool]:
    """Class embeddings for the prompts, from the cache when possible.

    ``trim``: see :func:`encode_prompts` (the same embeddings, encoded faster).

    Returns:
        (tensor [classes, dim], whether it came from the cache)
    """
    from biotrove_cli.core.io import atomic_open

    onnx = getattr(loaded, "backend", "torch") == "onnx"  # numpy, and no torch
    key = cache_key(loaded.text_fingerprint(), prompts)
    bundled = bundled_embeddings(loaded, key, len(prompts))
    if bundled is not None:
        check_finite_embeddings(loaded, bundled)
        return bundled, True
    path = None
    if use_cache:
        path = cache_root() / key[:2] / f"{key}.safetensors"
        if path.is_file():
            emb = _read_cache(path, len(prompts), numpy=onnx)
            if emb is not None:
                return emb, True
    emb = encode_prompts(loaded, prompts, batch_size=batch_size, progress=progress, trim=trim)
    check_finite_embeddings(loaded, emb)  # before the cache keeps them
    if path is not None:
        if onnx:
            from safetensors.numpy import save
        else:
            from safetensors.torch import save
        try:
            with atomic_open(path, "wb") as fh:
                fh.write(
                    save(
                        {"embeddings": emb if onnx else emb.contiguous()},
                        metadata={"classes": str(len(prompts)), "version": CACHE_VERSION},
                    )
                )
        except OSError as exc:  # a read-only cache must not stop the job
            log.warning("cannot write the text-embedding cache (%s)", exc)
    return emb, False
