"""The few array operations zero-shot scoring needs, for both backends: torch tensors (the
PyTorch path) and numpy arrays (the ONNX path, which never imports torch). Each function takes
either and returns the same kind; torch is imported only when given a tensor.
"""

from __future__ import annotations

from typing import Any


def is_numpy(x: Any) -> bool:
    import numpy as np

    return isinstance(x, np.ndarray)


def to_numpy(x: Any) -> Any:
    """float32 numpy array of ``x`` (a tensor is moved to the CPU first)."""
    import numpy as np

    if is_numpy(x):
        return x.astype(np.float32, copy=False)
    return x.detach().float().cpu().numpy()


def as_float(x: Any) -> Any:
    """``x`` as float32, in its own kind."""
    import numpy as np

    return x.astype(np.float32, copy=False) if is_numpy(x) else x.float()


def index(values: list[int], numpy: bool) -> Any:
    """An int64 index of ``values``: a numpy array, or a torch tensor."""
    import numpy as np

    if numpy:
        return np.asarray(values, dtype=np.int64)
    import torch

    return torch.tensor(values, dtype=torch.long)


def softmax_scores(feats: Any, weights: Any, scale: float) -> Any:
    """``softmax(scale * feats @ weights.T)`` over the last axis."""
    if is_numpy(feats):
        import numpy as np

        logits = scale * (feats @ weights.T)
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        return logits
    import torch

    with torch.inference_mode():
        return torch.softmax(scale * feats @ weights.T, dim=-1)


def sum_columns(probs: Any, owner: Any, n_out: int) -> Any:
    """[B, n_out]: each column of ``probs`` added into column ``owner[j]`` (``-1``: dropped)."""
    if is_numpy(probs):
        import numpy as np

        valid = owner >= 0
        out = np.zeros((probs.shape[0], n_out), dtype=probs.dtype)
        np.add.at(out.T, owner[valid], probs[:, valid].T)
        return out
    import torch

    valid = owner >= 0
    out = torch.zeros(probs.shape[0], n_out, dtype=probs.dtype, device=probs.device)
    return out.index_add_(1, owner[valid], probs[:, valid])


def topk(x: Any, k: int) -> tuple[list[list[float]], list[list[int]]]:
    """The ``k`` largest values of each row and their columns, largest first (plain lists)."""
    if is_numpy(x):
        import numpy as np

        idx = topk_indices(x, k)
        return np.take_along_axis(x, idx, axis=1).tolist(), idx.tolist()
    vals, idx = x.topk(k, dim=1)
    return vals.cpu().tolist(), idx.cpu().tolist()


def topk_indices(x: Any, k: int) -> Any:
    """[B, k] int64 numpy array: each row's ``k`` largest columns, largest first."""
    import numpy as np

    if is_numpy(x):
        k = min(k, x.shape[1])
        part = np.argpartition(-x, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(x, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    return x.topk(k, dim=1).indices.cpu().numpy()


def picked_nll(probs: Any, rows: Any, cols: Any) -> float:
    """``-sum(log(probs[rows[i], cols[i]]))``, each probability at least 1e-12."""
    import numpy as np

    if is_numpy(probs):
        picked = probs[np.asarray(rows), np.asarray(cols)].astype(np.float64)
        return -float(np.log(np.maximum(picked, 1e-12)).sum())
    import torch

    rows_t = torch.as_tensor(rows, device=probs.device)
    cols_t = torch.as_tensor(cols, device=probs.device)
    return -float(probs[rows_t, cols_t].float().clamp_min(1e-12).log().sum())


def masked_argmax(logits: Any, rows: list[int], allowed: list[list[int]]) -> Any:
    """For each of ``rows``, the argmax of ``logits[row]`` over its ``allowed`` columns (numpy)."""
    import numpy as np

    x = to_numpy(logits[rows])
    mask = np.full(x.shape, -np.inf, dtype=np.float32)
    for r, cols in enumerate(allowed):
        mask[r, list(cols)] = 0.0
    return (x + mask).argmax(axis=1)


def row_max(x: Any) -> tuple[list[float], list[int]]:
    """Each row's largest value and its column (plain lists)."""
    if is_numpy(x):
        idx = x.argmax(axis=1)
        return x[range(len(idx)), idx].tolist(), idx.tolist()
    vals, idx = x.max(dim=1)
    return vals.cpu().tolist(), idx.cpu().tolist()


def nonfinite_rows(x: Any) -> int:
    """How many rows hold NaN or infinity."""
    if is_numpy(x):
        import numpy as np

        return int((~np.isfinite(x).all(axis=-1)).sum())
    import torch

    return int((~torch.isfinite(x).all(dim=-1)).sum())


def normalize_rows(x: Any) -> Any:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    if is_numpy(x):
        import numpy as np

        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return x / np.maximum(norm, 1e-12)
    import torch.nn.functional as F

    return F.normalize(x, dim=-1)
