"""Spreading units over ``--workers`` processes (spawned, so safe beside threads), with
shared progress, Ctrl-C handled by the parent, and writers that end with it: killed with the
parent (even by kill -9, :func:`biotrove_cli.core.processes.die_with_parent`), and an orphan
that got that far publishes nothing."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from biotrove_cli.core.data.shard.plan import Unit
from biotrove_cli.core.data.shard.unit import StrictStop, WriteSettings, write_unit
from biotrove_cli.core.errors import BiotroveError, InputError
from biotrove_cli.core.runtime import ProgressFn

_W: dict[str, Any] = {}


def _worker_init(settings: WriteSettings, counter: Any, parent: int) -> None:
    import signal

    from biotrove_cli.core.processes import die_with_parent

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    _W["settings"] = settings
    _W["counter"] = counter
    _W["parent"] = parent


def _worker_tick(n: int) -> None:
    counter = _W["counter"]
    with counter.get_lock():
        counter.value += n


def _worker_run(unit: Unit) -> dict[str, Any]:
    try:
        return {"ok": write_unit(unit, _W["settings"], tick=_worker_tick, parent_pid=_W["parent"])}
    except StrictStop as exc:
        return {"strict": str(exc)}


def write_all(
    todo: list[Unit],
    settings: WriteSettings,
    workers: int,
    progress: ProgressFn | None,
) -> list[dict[str, Any]]:
    """Write ``todo`` in this process or in ``workers`` processes; returns unit stats."""
    total = sum(len(u.samples) for u in todo)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    results: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, total)
    if workers <= 1 or len(todo) <= 1:
        for unit in todo:
            try:
                results.append(write_unit(unit, settings, tick=tick))
            except StrictStop as exc:
                _raise_strict(str(exc))
        return results

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # no fork: safe beside threads (progress bar, downloads)
    counter = ctx.Value("q", 0)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(settings, counter, os.getpid()),
    )
    try:
        pending = {pool.submit(_worker_run, u) for u in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in finished:
                res = fut.result()
                if "strict" in res:
                    _raise_strict(res["strict"])
                results.append(res["ok"])
            if progress is not None:
                progress(int(counter.value), total)
    except BrokenProcessPool as exc:
        _stop(pool)
        raise BiotroveError(
            "a writer process died (killed, or out of memory); complete shards are kept",
            hint="run the same command again to resume; use fewer --workers if memory is short",
        ) from exc
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _stop(pool: Any) -> None:
    """End a process pool now: queued units are dropped, running writers terminated (their
    unpublished temp files are removed when the unit is redone)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(5)


def _raise_strict(payload: str) -> None:
    info = json.loads(payload)
    raise InputError(
        f"--strict: bad sample {info['key']} ({info['source']}): {info['reason']}"
        + (f" - {info['detail']}" if info.get("detail") else ""),
        hint=f"fix or remove that image, or drop --strict to count bad images and go on; "
        f"shards written so far are kept ({info['shard']} was not written)",
    )
