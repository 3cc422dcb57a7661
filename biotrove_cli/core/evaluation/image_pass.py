"""The image pass of ``classify``, ``embed`` and the Python API (one engine): inputs -> decoded,
preprocessed batches -> unit-norm image features, with the inputs that failed and why.

Inputs are file paths (decoded in DataLoader worker processes, JPEG draft decoding near the
model's input size, EXIF orientation applied) or, from Python, PIL images and numpy arrays
(preprocessed in this process). A failure never stops the pass: it travels with its batch as a
reason code (``missing``, ``not_image``, ``truncated``...), in input order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from biotrove_cli.core.runtime import cpu_threads, resolve_workers

#: What the decoders' reason codes mean, for messages.
REASONS = {
    "missing": "no such file",
    "empty": "the file is empty",
    "not_image": "not an image",
    "truncated": "truncated image",
    "corrupt": "corrupt image",
    "too_large": "image too large",
    "unsupported": "an image format biotrove does not read",
    "ambiguous": "several files match",
}


@dataclass
class EncodedBatch:
    """One batch of the pass: every input's key and whether it decoded, the features of those
    that did (in order), and the failures with their reason (in order)."""

    keys: list[str]
    ok: list[bool]
    features: Any  # [n_ok, D] float32 on the model's device, or None when none decoded
    failures: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.keys)


def item_key(item: Any, index: int) -> str:
    """What an input is called in records: its path, a PIL image's file name, else
    ``image[INDEX]``."""
    if isinstance(item, str):
        return item
    if hasattr(item, "__fspath__"):
        return str(item)
    name = getattr(item, "filename", "")
    return name if isinstance(name, str) and name else f"image[{index}]"


def _to_pil(obj: Any) -> Any:
    """A PIL image (RGB) from a PIL image or a numpy array (HxW, HxWx3 or HxWx4; uint8, or
    floats in [0, 1])."""
    import numpy as np
    from PIL import Image

    if isinstance(obj, Image.Image):
        return obj.convert("RGB")
    arr = np.asarray(obj)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array is HxW or HxWxC (C = 1, 3 or 4), not {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.nan_to_num(arr.astype(np.float32)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr).convert("RGB")


class ItemDataset:
    """Map-style dataset over inputs: path -> decoded file, PIL image / array -> preprocessed."""

    def __init__(self, items: Sequence[Any], preprocess: Any, draft: int):
        self.items = list(items)
        self.preprocess = preprocess
        self.draft = draft

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from biotrove_cli.core.evaluation.decode import load_file

        item = self.items[i]
        key = item_key(item, i)
        if isinstance(item, str) or hasattr(item, "__fspath__"):
            image, reason = load_file((str(item),), self.preprocess, self.draft)
        else:
            try:
                image, reason = self.preprocess(_to_pil(item)), ""
            except (ValueError, TypeError, OSError):
                image, reason = None, "not_image"
        return {"key": key, "image": image, "error": reason, "taxon": None}


def in_memory(items: Sequence[Any]) -> bool:
    """Whether any input is an image object rather than a path (those stay in this process)."""
    return any(not (isinstance(it, str) or hasattr(it, "__fspath__")) for it in items)


def encode_batches(
    items: Sequence[Any],
    loaded: Any,
    encoder: Any,
    batch_size: int,
    workers: int | None,
    timer: list[float] | None = None,
) -> Iterator[EncodedBatch]:
    """Decode and encode ``items`` batch by batch, in input order.

    Args:
        loaded: the :class:`LoadedModel` (its preprocessing and input size).
        encoder: the model's image encoder (:func:`zeroshot.make_image_encoder`).
        workers: decoding processes (threads for an ONNX bundle); None = auto
            (:func:`runtime.resolve_workers`); in-memory images are always preprocessed in
            this process.
        timer: ``timer[0]`` is kept at the seconds the pass has taken so far.
    """
    if not items:
        return
    n_workers = 0 if in_memory(items) else resolve_workers(workers, encoder.device, encoder.params)
    dataset = ItemDataset(items, loaded.preprocess, loaded.image_size)
    if getattr(encoder, "backend", "torch") == "onnx":
        # no torch: threads decode (at least one, a batch or two ahead of onnxruntime)
        from biotrove_cli.core.evaluation.decode import collate
        from biotrove_cli.core.evaluation.threaded import thread_batches

        loader: Any = thread_batches(dataset, batch_size, max(1, n_workers), collate)
        threads: Any = contextlib.nullcontext()
    else:
        from biotrove_cli.core.evaluation.data import image_loader

        loader = image_loader(dataset, batch_size, n_workers, pin_memory=encoder.cuda)
        threads = cpu_threads(n_workers, encoder.device)
    t0 = time.perf_counter()
    with threads:
        for batch in loader:
            feats = encoder(batch["images"]) if batch["images"] is not None else None
            keys: list[str] = []
            ok_i = bad_i = 0
            for is_ok in batch["ok_flags"]:
                if is_ok:
                    keys.append(batch["keys"][ok_i])
                    ok_i += 1
                else:
                    keys.append(batch["bad"][bad_i][0])
                    bad_i += 1
            if timer is not None:
                timer[0] = time.perf_counter() - t0
            yield EncodedBatch(keys, list(batch["ok_flags"]), feats, list(batch["bad"]))
