"""Where and how computation runs: the device, the precision, the CPU's share of threads and
decoding workers, and the progress callback type (one owner for each).

``auto`` means the best this machine has: CUDA, then Apple's GPU (``mps``), then the CPU. The
CPU default precision is fp32: bf16 is fast only on CPUs with AMX, so it stays opt-in.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from biotrove_cli.core.errors import UsageError

log = logging.getLogger("biotrove")

#: ``progress(done, total)``: how the core reports progress; it never prints.
ProgressFn = Callable[[int, int], None]

#: Precisions of inference (eval, classify, embed).
INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
#: Precisions of training (open_clip_train's names).
TRAINING_PRECISIONS = ("auto", "fp32", "amp", "amp_bf16", "bf16", "pure_bf16")

SMALL_TOWER = 20_000_000  # image-tower parameters below which decoding is the bottleneck


def device_type(device: Any) -> str:
    """``cuda:1`` / torch.device -> ``cuda``."""
    return str(getattr(device, "type", device)).split(":")[0]


def is_cuda(device: Any) -> bool:
    return device_type(device) == "cuda"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(
    device: str | None,
    *,
    local_rank: int | None = None,
    option: str = "--device",
    backend: str = "torch",
) -> str:
    """``auto`` -> ``cuda`` / ``mps`` / ``cpu``; an explicit device is checked against this
    machine. Under torchrun (``local_rank`` given) a bare ``cuda`` becomes ``cuda:LOCAL_RANK``.
    The ``onnx`` backend (an ONNX bundle: :func:`models.spec.backend_of`) runs on the CPU and
    never imports torch.

    Raises:
        UsageError: the device does not exist here (exit 2), naming ``option``.
    """
    want = (device or "auto").strip().lower()
    label = f"{option} {want}" if option.startswith("-") else f"{option}={want}"
    if backend == "onnx":
        if want not in ("auto", "cpu"):
            raise UsageError(
                f"{label}: an ONNX bundle runs on the CPU (onnxruntime)",
                hint=f"use {option} cpu (or auto), or the open_clip export for a GPU",
            )
        return "cpu"
    import torch

    if want == "auto":
        if torch.cuda.is_available():
            want = "cuda"
        elif _mps_available():
            want = "mps"
        else:
            want = "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"{label}: CUDA is not available on this machine",
                hint=f"use {option} cpu (or auto)"
                if option.startswith("-")
                else f"use {option}=cpu (or auto)",
            )
        return f"cuda:{local_rank}" if want == "cuda" and local_rank is not None else want
    if want.startswith("mps"):
        if not _mps_available():
            raise UsageError(
                f"{label}: Apple's GPU (MPS) is not available on this machine",
                hint="mps needs macOS on Apple silicon with a torch built for it; use cpu or auto",
            )
        return "mps"
    if want != "cpu":
        try:
            torch.device(want)
        except RuntimeError as exc:
            raise UsageError(
                f"{label}: not a device ({exc})", hint="use cpu, cuda, cuda:N, mps or auto"
            ) from exc
        raise UsageError(
            f"{label}: not a device biotrove runs on", hint="use cpu, cuda, mps or auto"
        )
    return want


def resolve_precision(precision: str | None, device: Any, *, training: bool = False) -> str:
    """``auto`` -> bf16 (``amp_bf16`` when training) on CUDA, fp32 elsewhere.

    Raises:
        UsageError: an unknown precision.
    """
    choices = TRAINING_PRECISIONS if training else INFERENCE_PRECISIONS
    value = (precision or "auto").strip().lower()
    if value not in choices:
        raise UsageError(f"unknown precision {precision!r}", hint=f"use {', '.join(choices)}")
    cuda = is_cuda(device)
    if value == "auto":
        if not cuda:
            return "fp32"
        return "amp_bf16" if training else "bf16"
    if training and value != "fp32" and not cuda:
        log.warning(
            "precision %s on the CPU is very slow here; fp32 is the CPU default "
            "(set precision=fp32)",
            value,
        )
    return value


def resolve_workers(workers: int | None, device: Any, image_tower_params: int | None = None) -> int:
    """Decoding worker processes: as given, or ``auto`` (None).

    On CUDA the GPU outpaces decoding, so all cores but one decode. On a CPU the decoders
    compete with the image tower for the same cores: a large tower (ViT-B and up) is the
    bottleneck, so a quarter of the cores decode (none on a 2-core machine, where decoding
    in-process costs a few percent); a small tower encodes faster than JPEGs decode, so half
    of the cores do (at least one).
    """
    if workers is not None:
        return max(0, int(workers))
    cores = os.cpu_count() or 1
    if is_cuda(device):
        return max(1, min(16, cores - 1))
    if image_tower_params is not None and image_tower_params < SMALL_TOWER:
        return max(1, cores // 2)
    return cores // 4


def training_threads(processes_per_node: int, data_workers: int, cores: int | None = None) -> int:
    """Intra-op threads of one training process: the node's cores (or the ``cores`` a
    scheduler such as Ray reserved) are shared by its training processes and their data
    workers; more threads than cores stall every operator (oversubscribed OpenMP)."""
    per_process = (cores or os.cpu_count() or 1) // max(1, processes_per_node)
    return max(1, per_process - min(data_workers, 1))


@contextlib.contextmanager
def cpu_threads(workers: int, device: Any) -> Iterator[None]:
    """While ``workers`` decode on the CPU, keep the model's intra-op threads to the other
    cores. Oversubscribed OpenMP threads stall at every operator's barrier (milliseconds each,
    a hundredfold slowdown for a small model); the setting is restored afterwards."""
    import torch

    old = torch.get_num_threads()
    new = max(1, (os.cpu_count() or 1) - workers)
    if not is_cuda(device) and workers > 0 and new < old:
        torch.set_num_threads(new)
        try:
            yield
        finally:
            torch.set_num_threads(old)
    else:
        yield


def terminal_progress_wanted() -> bool:
    """Whether a library's own progress bar may draw: stderr is a terminal and the ``biotrove``
    logger shows narrative lines (not ``--quiet``)."""
    import sys

    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tty and log.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def tqdm_progress(desc: str, unit: str = "it", enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A :data:`ProgressFn` drawing a ``tqdm.auto`` bar (a widget in notebooks, text on a
    terminal), opened at the first report and closed on exit; None when not ``enabled``."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True))
        bar = bars[0]
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Log how long ``stage`` took (``-v``: timings per stage), also when it fails."""
    import time

    t0 = time.perf_counter()
    try:
        yield
    finally:
        log.debug("%s: %.2f s", stage, time.perf_counter() - t0)
