"""torch's ``IterableDataset`` marker around an iterable (the shard stream), so that the
DataLoader streams it; kept apart so that :mod:`.data` imports without torch (the ONNX backend
reads tables and image folders with no torch at all)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import IterableDataset


class TorchIterable(IterableDataset):
    """An iterable, as a torch IterableDataset."""

    def __init__(self, inner: Iterable[Any]):
        self.inner = inner

    def __iter__(self) -> Iterator[Any]:
        return iter(self.inner)
