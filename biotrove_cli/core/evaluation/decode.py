"""Decoding what the image passes read, with no torch: a file (or its candidates) to a
preprocessed image or a reason code, and a batch of decoded items collated. The images are
torch tensors (open_clip's preprocessing) or numpy arrays (the ONNX backend's); :func:`collate`
stacks either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def stack(images: list[Any]) -> Any:
    """Stack same-shaped images into one batch: numpy arrays with numpy, tensors with torch."""
    import numpy as np

    if isinstance(images[0], np.ndarray):
        return np.stack(images)
    import torch

    return torch.stack(images)


def decode_image(data: bytes, source: str, preprocess: Any, draft: int) -> tuple[Any, str]:
    from biotrove_cli.core.data.images import ImageError, decode

    try:
        img = decode(data, source=source, draft=(draft, draft)).image
        return preprocess(img), ""
    except ImageError as exc:
        return None, exc.reason
    except (OSError, ValueError, RuntimeError):  # a transform that chokes on an image
        return None, "corrupt"


def load_file(candidates: Sequence[str], preprocess: Any, draft: int) -> tuple[Any, str]:
    """The first existing candidate, decoded and preprocessed; (None, reason) when it fails
    (``unsupported`` when none exists but the first is there in a format biotrove does not
    read, e.g. ``{photo_id}.gif``)."""
    from biotrove_cli.core.data.images import ImageError, missing_error, read_bytes

    if not candidates:
        return None, "missing"
    for cand in candidates:
        try:
            data = read_bytes(cand)
        except ImageError as exc:
            if exc.reason == "missing":
                continue
            return None, exc.reason
        return decode_image(data, cand, preprocess, draft)
    return None, missing_error(candidates[0]).reason


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the decoded images; keep the failures aside with their reason, and shard problems
    (which are not samples) apart."""
    problems = [it["problem"] for it in items if "problem" in it]
    items = [it for it in items if "problem" not in it]
    ok = [it for it in items if it["image"] is not None]
    return {
        "images": stack([it["image"] for it in ok]) if ok else None,
        "taxa": [it["taxon"] for it in ok],
        "keys": [it["key"] for it in ok],
        "index": [it.get("index", -1) for it in ok],  # table rows: the row of each image
        "bad": [(it["key"], it["error"]) for it in items if it["image"] is None],
        "ok_flags": [it["image"] is not None for it in items],
        "n": len(items),
        "shard_problems": problems,
    }
