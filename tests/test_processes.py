"""Process lifetime and one writer per output: kill -9 of a launcher leaves nothing running, a
second job on the same run folder, dataset folder or output file refuses at once naming the
first one's pid (and the first job's output is complete), Ctrl-C saves a training run that the
same command then continues.

Every job is started with a marker in its environment, which its processes inherit: that is how
the tests find them, and a ``finally`` kills whatever is left so that a failing test never leaks
processes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DEMO_SPECIES, REPO, run_subprocess

MARK = "BIOTROVE_TEST_JOB"
TINY = ["--preset", "tiny", "log_every=1"]


# -- finding and ending a job's processes ---------------------------------------------------------
def job_pids(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``MARK=marker``."""
    needle = f"{MARK}={marker}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except (OSError, IndexError):
            continue
    return found


def wait_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """Wait up to ``timeout`` seconds for the job's processes to end; those left."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = job_pids(marker)
        if not left:
            return []
        time.sleep(0.2)
    return job_pids(marker)


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{pid}: {cmd[:150]}")
    return out


@contextlib.contextmanager
def job(
    tmp_path: Path, *args: str, stdin: int | None = None, session: bool = False
) -> Iterator[subprocess.Popen]:
    """``biotrove ARGS`` with a marker, output in files (an orphan holding a pipe could block
    the test); every process of the job is killed at the end, whatever happened. ``session``:
    in a session of its own, as a terminal's foreground job (Ctrl-C reaches the whole group)."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{MARK: marker})
    out = open(tmp_path / f"{marker}.out", "w")  # noqa: SIM115 - closed below
    err = open(tmp_path / f"{marker}.err", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "biotrove_cli", *map(str, args)],
        stdout=out,
        stderr=err,
        stdin=stdin,
        env=env,
        cwd=REPO,
        text=True,
        start_new_session=session,
    )
    proc.marker = marker  # type: ignore[attr-defined]
    proc.stderr_path = tmp_path / f"{marker}.err"  # type: ignore[attr-defined]
    proc.stdout_path = tmp_path / f"{marker}.out"  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        for pid in job_pids(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        out.close()
        err.close()


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"the job ended early ({proc.returncode}): " + proc.stderr_path.read_text()[-3000:]  # type: ignore[attr-defined]
            )
        time.sleep(0.2)
    raise AssertionError("timed out")


def kill_launcher_and_check(proc: subprocess.Popen) -> None:
    """SIGKILL the launching process only; nothing it started may outlive it by 10 s."""
    marker = proc.marker  # type: ignore[attr-defined]
    started = job_pids(marker)
    assert len(started) > 1, describe(started)  # it did start processes of its own
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = wait_gone(marker, timeout=10.0)
    assert not left, "still running 10 s after kill -9 of the launcher:\n" + "\n".join(
        describe(left)
    )


def fifo_photos(photos, folder: Path) -> Path:
    """The photos' file names as FIFOs: a process that opens one blocks until killed (a job
    that would run forever, without a timing guess)."""
    folder.mkdir()
    for p in photos:
        os.mkfifo(folder / p.path.name)
    return folder


# -- kill -9 of the launcher ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.distributed
def test_kill_9_of_a_two_process_training_run_ends_its_workers(tmp_path, train_shards):
    run = tmp_path / "run"
    args = ["train", *TINY, "--data", train_shards, "--run-dir", run, "--nproc-per-node", "2"]
    args += ["--batch-size", "8", "--workers", "1", "--steps", "100000", "save_every=2"]
    with job(tmp_path, *args) as proc:
        wait_for(lambda: any((run / "checkpoints").glob("step-*.pt")), proc)
        kill_launcher_and_check(proc)
        # nothing writes into the run folder any more, and it can be continued at once
        size = (run / "metrics.jsonl").stat().st_size
        time.sleep(1)
        assert (run / "metrics.jsonl").stat().st_size == size


@pytest.mark.slow
def test_kill_9_of_shard_ends_its_writers_then_a_rerun_takes_the_lock_over(tmp_path, small_world):
    blocked = fifo_photos(small_world["photos"], tmp_path / "fifos")
    out = tmp_path / "shards"
    base = ["shard", small_world["metadata"], "--out", out, "--image-size", "32"]
    base += ["--samples-per-shard", "4", "--val-fraction", "0", "--min-per-species", "1"]
    with job(tmp_path, *base, "--images", blocked, "--workers", "2") as proc:
        # two writers, each stuck on its first photo
        wait_for(lambda: len(job_pids(proc.marker)) >= 3, proc)  # type: ignore[attr-defined]
        second = run_subprocess(*base, "--images", small_world["images"], timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"process {proc.pid}" in second.stderr and "Traceback" not in second.stderr
        assert "another job is writing this dataset" in second.stderr
        kill_launcher_and_check(proc)
    # the dead job's lock file is still there: taken over without a word
    assert (out / ".biotrove.lock").exists()
    again = run_subprocess(*base, "--images", small_world["images"], timeout=300)
    assert again.returncode == 0, again.stderr
    assert "another job" not in again.stderr
    assert not (out / ".biotrove.lock").exists()
    sizes = json.loads((out / "train" / "sizes.json").read_text())
    assert sum(sizes.values()) == len(small_world["photos"])


@pytest.mark.slow
@pytest.mark.distributed
def test_kill_9_of_a_two_process_eval_ends_its_workers(tmp_path, small_world, tiny_model):
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), ckpt)
    blocked = fifo_photos(small_world["photos"], tmp_path / "fifos")
    table = tmp_path / "photos.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "kingdom", "phylum", "class", "order", "family", "genus", "species"])
        for p in small_world["photos"]:
            w.writerow([blocked / p.path.name, *p.taxon.names])
    args = ["eval", "-m", ckpt, "--data", table, "--labels", DEMO_SPECIES, "--workers", "0"]
    with job(tmp_path, *args, "--nproc-per-node", "2") as proc:
        wait_for(lambda: len(job_pids(proc.marker)) >= 3, proc)  # type: ignore[attr-defined]
        kill_launcher_and_check(proc)


# -- one writer per output ------------------------------------------------------------------------
@contextlib.contextmanager
def held_lock(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock of ``folder`` (as a running job would)."""
    code = (
        "import sys\n"
        "from biotrove_cli.core.locks import lock_folder\n"
        "lock_folder(sys.argv[1], 'folder').acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_training_run_on_a_busy_run_folder_refuses(tmp_path, train_shards):
    run = tmp_path / "run"
    args = ["train", *TINY, "--data", train_shards, "--run-dir", run, "--workers", "0"]
    args += ["--steps", "2", "--batch-size", "16"]
    with held_lock(run) as holder:
        busy = run_subprocess(*args)
        assert busy.returncode == 1, busy.stderr
        assert f"process {holder.pid}" in busy.stderr and "another job" in busy.stderr
        assert "Traceback" not in busy.stderr
        assert not (run / "launch.yaml").exists()  # refused before writing anything
    # the holder was killed: its lock file stays, and is taken over silently
    assert (run / ".biotrove.lock").exists()
    free = run_subprocess(*args, "-v")
    assert free.returncode == 0, free.stderr
    assert "another job" not in free.stderr and not (run / ".biotrove.lock").exists()
    # -v: the time of each setup piece and the decisions taken
    assert "train setup: model:" in free.stderr and "a fresh start" in free.stderr


def test_two_classify_jobs_on_one_output_file(tmp_path, small_world, tiny_model):
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), ckpt)
    out = tmp_path / "out.csv"
    args = ["classify", "-m", ckpt, "--labels", DEMO_SPECIES, "-k", "2", "--workers", "0"]
    with job(tmp_path, *args, "-", "-o", out, stdin=subprocess.PIPE) as first:
        # the first job holds the file while it waits for its list of photos on stdin
        wait_for(lambda: (tmp_path / ".out.csv.lock").exists(), first)
        photo = small_world["photos"][0].path
        second = run_subprocess(*args, photo, "-o", out)
        assert second.returncode == 1, second.stderr
        assert f"process {first.pid}" in second.stderr and "Traceback" not in second.stderr
        paths = [str(p.path) for p in small_world["photos"]]
        first.communicate("\n".join(paths) + "\n", timeout=300)
        assert first.returncode == 0, first.stderr_path.read_text()  # type: ignore[attr-defined]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 * len(paths)  # every row of the first job is there
    assert {r["path"] for r in rows} == set(paths)
    assert not (tmp_path / ".out.csv.lock").exists()


# -- Ctrl-C during training -----------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_continues(tmp_path, train_shards):
    run = tmp_path / "run"
    args = ["train", *TINY, "--data", train_shards, "--run-dir", run, "--workers", "1"]
    args += ["--steps", "30", "--batch-size", "8", "save_every=1000"]

    def logged() -> int:
        p = run / "metrics.jsonl"
        return len(p.read_text().splitlines()) if p.exists() else 0

    with job(tmp_path, *args, session=True) as proc:
        wait_for(lambda: logged() >= 2, proc)
        # Ctrl-C on a terminal: SIGINT to the whole foreground group, data loader worker too
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        err = proc.stderr_path.read_text()  # type: ignore[attr-defined]
    assert "Interrupted: interrupted at step" in err and "checkpoint saved" in err, err
    assert "Traceback" not in err and "rerun the same command" in err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    step = info["steps"]
    assert 2 <= step < 30
    assert (run / "checkpoints" / f"step-{step:08d}.pt").is_file()
    # "rerun the same command to resume": it continues from that checkpoint
    again = run_subprocess(*args)
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr and f"step-{step:08d}.pt" in again.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 30 and steps.count(step + 1) == 1
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


# -- a process group ends when it is destroyed ----------------------------------------------------
_RANK_SCRIPT = """
import os, sys
from biotrove_cli.core.distributed.env import process_group
import torch.distributed as dist

def threads():
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]

with process_group("cpu") as env:
    import torch.distributed.nn  # what open_clip imports (the trainer and eval import it late)
    got = [None, None] if env.rank == 0 else None
    dist.gather_object(env.rank, got, dst=0)
left = [t for t in threads() if "gloo" in t]
print(",".join(left) or "none", flush=True)
"""


@pytest.mark.distributed
def test_a_destroyed_process_group_leaves_no_gloo_threads_behind(tmp_path):
    """open_clip imports torch.distributed.nn, whose functions bind the live group as a default
    argument: the group then outlived destroy_process_group (with gloo's threads and sockets)
    until interpreter shutdown, where tearing it down could abort a rank (SIGABRT)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        env.pop("TORCHELASTIC_RUN_ID", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK_SCRIPT],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert out.strip() == "none", f"gloo threads alive after the group ended: {out}"
