"""The training data pipeline: shards -> decoded, augmented, tokenized batches.

Deterministic by construction, so that a resumed run continues where it stopped:

* every (rank, loader worker) pair is one *stream*: ``g = rank * workers + w`` of ``G``;
* not resampled: each epoch shuffles the shard list with the seed and epoch, and stream ``g``
  reads shards ``g, g + G, ...`` (so there must be at least G shards), wrapping around if it
  runs dry; resampled: stream ``g`` draws shards with replacement from its own seeded RNG;
* an epoch is ``num_samples // (batch_size * world)`` batches per rank; batch ``b`` comes from
  worker ``b % workers`` (the DataLoader's round-robin order), so resuming at batch ``B0`` makes
  each stream skip exactly the raw samples of the batches it had already produced (without
  decoding them);
* text type ``random`` chooses one caption type per batch exactly as the BioTrove/BioCLIP
  trainer did: ``random.seed(step); random.choice([sci, com, taxon, sci_com, taxon_com])`` with
  ``step = (batches_per_epoch // accum) * epoch + batch // accum``; ``random-per-sample`` draws
  a type per sample instead (seeded by step and position).

A sample whose image cannot be decoded is replaced by another sample of the same batch (batch
shapes must agree across ranks for the gathered contrastive loss) and counted.

Shards are read through :func:`biotrove_cli.core.data.shards.read_shard` (local or remote, with
retries and a read timeout). A shard that fails or ends early travels with the next batch as a
:class:`~biotrove_cli.core.data.shards.ShardProblem`; the Trainer warns, counts it
(:mod:`biotrove_cli.core.training.problems`) and, under ``data.strict``, stops. Problems met
while a resumed stream skips the batches it had already produced are not reported again: the
checkpoint carries their count. Streams whose shards fail one after another pause longer each
time (the store may be down) and stop after ``MAX_FAILED_IN_A_ROW``.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from biotrove_cli.core.data import shards as shardlib
from biotrove_cli.core.data.sample import caption_key, caption_of, sample_image_bytes
from biotrove_cli.core.errors import BiotroveError, InputError, TrainingError
from biotrove_cli.core.taxonomy.captions import REFERENCE_RANDOM_TYPES, TEXT_TYPES


@dataclass(frozen=True)
class StreamPlan:
    """Everything a data worker needs; picklable (sent to worker processes)."""

    shards: tuple[str, ...]
    num_samples: int  # samples per epoch over all ranks
    batch_size: int  # per rank
    world_size: int
    rank: int
    workers: int  # DataLoader workers per rank (0 -> 1 in-process stream)
    resampled: bool
    seed: int
    text_type: str
    accum: int
    shuffle_buffer: int
    image_size: int
    decode_on_device: bool = False
    sizes: tuple[int | None, ...] = ()  # sizes.json count per shard (None: not listed)
    retries: int = 3  # retries of a failed shard open or read
    timeout: float = 60.0  # seconds a remote read may wait for data

    @property
    def read_options(self) -> shardlib.ReadOptions:
        return shardlib.ReadOptions(retries=self.retries, timeout=self.timeout)

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.workers)

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.batches_per_epoch // self.accum


def check_plan(plan: StreamPlan) -> None:
    """Refuse plans that cannot work, before training starts (clear errors, exit 1)."""
    n = len(plan.shards)
    if n == 0:
        raise InputError("no training shards", hint="pass --data with a folder of shards")
    total_streams = plan.world_size * plan.streams_per_rank
    if not plan.resampled and n < total_streams:
        raise TrainingError(
            f"too few shards: {n} shard(s) for {plan.world_size} process(es) x "
            f"{plan.streams_per_rank} data worker(s) = {total_streams} streams",
            hint="use fewer data workers (data.workers=N) or processes, set data.resampled=true, "
            "or reshard with a smaller --samples-per-shard",
        )
    if plan.batches_per_epoch < 1:
        raise TrainingError(
            f"batch size {plan.batch_size} x {plan.world_size} process(es) is larger than the "
            f"data ({plan.num_samples} samples per epoch)",
            hint="lower data.batch_size, or use more data",
        )
    if plan.batches_per_epoch < plan.accum:
        raise TrainingError(
            f"an epoch has {plan.batches_per_epoch} batch(es), fewer than optim.accum={plan.accum}",
            hint="lower optim.accum or data.batch_size",
        )


#: a stream stops when this many shards in a row could not be read (the store is down)
MAX_FAILED_IN_A_ROW = 10


def step_text_type(text_type: str, step: int) -> str:
    """The caption type of a batch (``random``: the reference trainer's choice)."""
    if text_type == "random":
        rnd = random.Random()
        rnd.seed(step)  # identical to the reference's random.seed(step); random.choice(...)
        return rnd.choice(REFERENCE_RANDOM_TYPES)
    return text_type


def validate_captions(shards: shardlib.ShardSet, text_type: str) -> None:
    """Check the first readable sample has the caption files the text type needs (clear error
    if not); shards that cannot be read are passed over (training warns about them)."""
    needed = (
        REFERENCE_RANDOM_TYPES if text_type in ("random", "random-per-sample") else (text_type,)
    )
    problems: list[shardlib.ShardProblem] = []
    for location in shards.locations[:3]:
        for sample in shardlib.read_shard(
            location, options=shards.options, on_problem=problems.append
        ):
            _check_sample(sample, location, needed, text_type)
            return
    raise TrainingError(
        f"{shards.spec}: the first shards are empty or unreadable: "
        + "; ".join(p.message() for p in problems[:3]),
        hint="check the shards (biotrove info) and the network, or re-run `biotrove shard`",
    )


def _check_sample(sample: dict[str, Any], location: str, needed: tuple[str, ...], text_type: str):
    missing = [t for t in needed if caption_key(t) not in sample]
    if missing:
        raise TrainingError(
            f"{location}: samples lack the caption file(s) "
            + ", ".join(f"{{key}}.{t}.txt" for t in missing)
            + f" needed by text type {text_type!r}",
            hint="reshard with `biotrove shard --captions all`, or set data.text_type to a "
            "type the shards have (default taxon_com)",
        )
    if sample_image_bytes(sample) is None:
        raise TrainingError(
            f"{location}: samples have no image (jpg/png/webp)",
            hint="is this a biotrove/WebDataset image-text shard?",
        )


class _Tokens:
    """open_clip tokenization with a cache: BioTrove captions repeat once per species."""

    def __init__(self, tokenizer: Callable, size: int = 200_000):
        self.tokenizer = tokenizer
        self.size = size
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def __call__(self, texts: list[str]):
        import torch

        out = []
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            toks = self.tokenizer(todo)
            for t, row in zip(todo, toks, strict=True):
                self.cache[t] = row
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        for t in texts:
            out.append(self.cache[t])
        return torch.stack(out)


class ShardStream:
    """An iterable over the batches of one epoch for one rank (torch IterableDataset protocol).

    Created by :func:`make_loader`; the DataLoader's workers each run :meth:`__iter__` as a
    distinct stream role.
    """

    def __init__(
        self,
        plan: StreamPlan,
        epoch: int,
        start_batch: int,
        transform: Callable,
        tokenizer: Callable,
    ):
        self.plan = plan
        self.epoch = epoch
        self.start_batch = start_batch
        self.transform = transform
        self.tokens = _Tokens(tokenizer)

    # -- the raw sample stream of one (rank, worker role) ---------------------------------------
    def _shard_sequence(self, role: int) -> Iterator[str]:
        p = self.plan
        g = p.rank * p.streams_per_rank + role
        total = p.world_size * p.streams_per_rank
        if p.resampled:
            rnd = random.Random(f"{p.seed}:{self.epoch}:{g}:resampled")
            while True:
                yield rnd.choice(p.shards)
        passes = 0
        while True:
            order = list(p.shards)
            random.Random(f"{p.seed}:{self.epoch}:{passes}:shards").shuffle(order)
            mine = order[g::total]
            if not mine:  # pragma: no cover - check_plan refuses this
                return
            yield from mine
            passes += 1

    def _raw_samples(self, role: int) -> Iterator[dict[str, Any]]:
        p = self.plan
        rnd = random.Random(f"{p.seed}:{self.epoch}:{p.rank}:{role}:buffer")
        buffer: list[dict[str, Any]] = []
        expected = dict(zip(p.shards, p.sizes, strict=False))
        dead: set[str] = set()  # failed once this epoch: not tried (nor counted) again
        empty_run = failed_run = 0
        sequence = self._shard_sequence(role)
        upcoming = next(sequence)
        with closing(shardlib.Prefetch(p.read_options)) as prefetch:
            while True:
                shard, upcoming = upcoming, next(sequence)
                got, found = 0, len(self.problems)
                stream = prefetch.take(shard)
                if upcoming not in dead:
                    prefetch.start(upcoming)  # its connection opens while this one is read
                if shard not in dead:
                    for sample in shardlib.read_shard(
                        shard,
                        expected=expected.get(shard),
                        options=p.read_options,
                        on_problem=self.problems.append,
                        stream=stream,
                    ):
                        got += 1
                        if p.shuffle_buffer <= 1:
                            yield sample
                            continue
                        if len(buffer) < p.shuffle_buffer:
                            buffer.append(sample)
                            continue
                        i = rnd.randrange(len(buffer))
                        buffer[i], sample = sample, buffer[i]
                        yield sample
                failed = len(self.problems) > found and self.problems[-1].kind == "failed"
                if failed:
                    dead.add(shard)
                failed_run = failed_run + 1 if failed and not got else 0
                empty_run = 0 if got else empty_run + 1
                self._give_up_or_wait(failed_run, empty_run)

    def _give_up_or_wait(self, failed_run: int, empty_run: int) -> None:
        """Shards that give nothing one after another: the store may be down. Wait longer
        before each next shard; stop after ``MAX_FAILED_IN_A_ROW`` (or a whole pass)."""
        if failed_run >= MAX_FAILED_IN_A_ROW or empty_run > len(self.plan.shards):
            last = self.problems[-1].message() if self.problems else "no samples"
            raise TrainingError(
                f"{empty_run} shards in a row gave no sample (the last: {last})",
                hint="check the network and the shards' location; the last checkpoint is "
                "kept: continue with --resume latest once they can be read",
            )
        if failed_run >= 2:
            time.sleep(min(2.0 ** (failed_run - 1), 60.0))

    # -- batches -------------------------------------------------------------------------------
    def _role(self) -> int:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        d = info.id if info is not None else 0
        return (d + self.start_batch) % self.plan.streams_per_rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        p = self.plan
        nw = p.streams_per_rank
        role = self._role()
        mine = list(range(role, p.batches_per_epoch, nw))
        skip = sum(1 for b in mine if b < self.start_batch)
        self.problems: list[shardlib.ShardProblem] = []
        samples = self._raw_samples(role)
        b = mine[skip] if skip < len(mine) else self.start_batch
        try:
            for _ in range(skip * p.batch_size):
                next(samples)
            self.problems.clear()  # the run that trained on them counted them (checkpoint)
            for b in mine[skip:]:
                raw = [next(samples) for _ in range(p.batch_size)]
                batch = self._make_batch(raw, b)
                batch["shard_problems"], self.problems = self.problems, []
                yield batch
        except BiotroveError as exc:  # raised in a worker process: hand it over whole
            yield {"valid": False, "batch": b, "fatal": (exc.message, exc.hint)}
        finally:
            samples.close()  # ends a remote read still in flight

    def _make_batch(self, raw: list[dict[str, Any]], b: int) -> dict[str, Any]:
        import torch

        p = self.plan
        step = p.steps_per_epoch * self.epoch + b // p.accum
        batch_type = (
            step_text_type(p.text_type, step) if p.text_type != "random-per-sample" else None
        )
        texts: list[str | None] = []
        images: list[Any] = []
        bad = 0
        missing_caption = 0
        for i, sample in enumerate(raw):
            if batch_type is None:
                ttype = random.Random(f"{p.seed}:{step}:{i}").choice(REFERENCE_RANDOM_TYPES)
            else:
                ttype = batch_type
            text = caption_of(sample, ttype)
            if text is None:
                missing_caption += 1
                text = caption_of(sample, "txt")
            img = self._image(sample)
            if img is None or text is None:
                bad += 1
                images.append(None)
                texts.append(None)
                continue
            images.append(img)
            texts.append(text)
        good = [i for i, im in enumerate(images) if im is not None]
        if not good:
            return {
                "valid": False,
                "batch": b,
                "step": step,
                "bad": bad,
                "missing_caption": missing_caption,
            }
        for i in range(len(images)):
            if images[i] is None:  # keep the batch shape: reuse a good sample of this batch
                j = good[i % len(good)]
                images[i], texts[i] = images[j], texts[j]
        tokens = self.tokens([t for t in texts if t is not None])
        if p.decode_on_device:
            image_data: Any = images  # list of uint8 tensors (JPEG bytes or decoded CHW)
        else:
            image_data = torch.stack(images)
        return {
            "valid": True,
            "images": image_data,
            "tokens": tokens,
            "keys": [s["__key__"] for s in raw],
            "texts": texts,
            "batch": b,
            "step": step,
            "text_type": batch_type or "per-sample",
            "bad": bad,
            "missing_caption": missing_caption,
        }

    def _image(self, sample: dict[str, Any]):
        import torch

        from biotrove_cli.core.data.images import ImageError, decode, is_jpeg

        data = sample_image_bytes(sample)
        if data is None:
            return None
        if self.plan.decode_on_device:
            if is_jpeg(data):
                return torch.frombuffer(bytearray(data), dtype=torch.uint8)
            try:
                img = decode(data).image
            except ImageError:
                return None
            import numpy as np

            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
        size = self.plan.image_size
        try:
            img = decode(data, draft=(size, size)).image
        except ImageError:
            return None
        return self.transform(img)


def make_loader(
    plan: StreamPlan, epoch: int, start_batch: int, transform: Callable, tokenizer: Callable
):
    """A DataLoader yielding this rank's batches of ``epoch`` from ``start_batch`` on."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    stream = ShardStream(plan, epoch, start_batch, transform, tokenizer)

    class _Dataset(IterableDataset):
        def __iter__(self):
            return iter(stream)

    kwargs: dict[str, Any] = {}
    if plan.workers > 0:
        from biotrove_cli.core.processes import loader_worker_init

        kwargs = {
            "num_workers": plan.workers,
            "persistent_workers": False,
            "prefetch_factor": 2,
            "multiprocessing_context": "fork" if _fork_ok() else "spawn",
            # workers end with the trainer (even after kill -9) and leave Ctrl-C to it
            "worker_init_fn": loader_worker_init,
        }
    generator = torch.Generator()
    generator.manual_seed(plan.seed * 1000003 + epoch * 7919 + plan.rank)
    return DataLoader(
        _Dataset(),
        batch_size=None,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        **kwargs,
    )


def _fork_ok() -> bool:
    import sys

    return sys.platform.startswith("linux")


def device_images(
    images: list[Any],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: Any,
    train: bool = True,
):
    """Decode JPEG byte tensors on ``device`` (nvjpeg on CUDA) and apply the train transform:
    random resized crop (scale 0.9-1, like open_clip), resize to ``size``, normalise."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg
    from torchvision.transforms import RandomResizedCrop

    jpeg_idx = [i for i, t in enumerate(images) if t.ndim == 1]
    decoded: list[Any] = list(images)
    if jpeg_idx:
        dev = device if getattr(device, "type", str(device)) == "cuda" else "cpu"
        outs = decode_jpeg([images[i] for i in jpeg_idx], device=dev)
        for i, img in zip(jpeg_idx, outs, strict=True):
            decoded[i] = img
    out = torch.empty((len(decoded), 3, size, size), device=device, dtype=torch.float32)
    for i, img in enumerate(decoded):
        img = img.to(device, non_blocking=True)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        if train:
            top, left, h, w = RandomResizedCrop.get_params(
                img, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)
            )
            img = img[:, top : top + h, left : left + w]
        else:
            h, w = img.shape[-2:]
            s = min(h, w)
            img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out[i] = F.interpolate(
            img[None].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )[0]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    return (out - m) / s


__all__ = [
    "StreamPlan",
    "ShardStream",
    "make_loader",
    "check_plan",
    "step_text_type",
    "validate_captions",
    "device_images",
    "TEXT_TYPES",
]
