"""A torch-free image loader for the ONNX backend: threads decode and preprocess the items of
a map-style dataset (PIL and numpy release the GIL for most of that work, and so does
onnxruntime while it encodes), and batches come out in input order, a few ahead of the
consumer. Stopping the consumer cancels what was not started; nothing outlives the pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

#: Batches decoded ahead of the one the consumer holds.
AHEAD = 2


def thread_batches(
    dataset: Any, batch_size: int, threads: int, collate: Callable[[list[Any]], Any]
) -> Iterator[Any]:
    """``collate`` of each ``batch_size`` items of ``dataset``, in order, decoded by ``threads``."""
    n = len(dataset)
    starts = iter(range(0, n, batch_size))
    pending: deque[list[Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="biotrove-decode")

    def submit() -> None:
        start = next(starts, None)
        if start is not None:
            stop = min(start + batch_size, n)
            pending.append([pool.submit(dataset.__getitem__, i) for i in range(start, stop)])

    try:
        for _ in range(AHEAD + 1):
            submit()
        while pending:
            futures = pending.popleft()
            submit()
            yield collate([f.result() for f in futures])
    finally:
        for futures in pending:
            for f in futures:
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
