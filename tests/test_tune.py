"""biotrove tune: the search space, checked before Ray starts; an ASHA search on Ray Tune + Ray
Train that stops weak trials and writes best.yaml; resume after kill -9; Ctrl-C; nothing of
the search left running; a clear error without Ray.

The searches run real Ray clusters on this machine (slow: about a minute per two trials on 2
cores); their trials use two learning rates that give different validation losses, so ASHA
has something to stop whichever trial arrives first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import run_subprocess

SPACE = "optim.lr: {grid: [3.0e-3, 1.0]}\n"
TRIAL = ["data.batch_size=16", "data.workers=0", "optim.warmup=1", "log_every=1"]


def _search(shards: Path, storage: Path, name: str, *extra: str) -> list[str]:
    return [
        "tune", "--preset", "tiny", "--data", str(shards), "--val-data", str(shards),
        "--space", str(storage.parent / "space.yaml"), "--metric", "val/loss",
        "--max-steps", "4", "--grace-steps", "2", "--storage-path", str(storage),
        "--name", name, "--format", "csv", *extra, *TRIAL,
    ]  # fmt: skip


def _marked(mark: str) -> list[int]:
    """Processes started under this test's marker (the search and everything it started)."""
    needle = f"BIOTROVE_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _gone(mark: str, timeout: float = 60.0) -> list[int]:
    """Wait for the marked processes to end; those still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _marked(mark)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _start(args: list[str], mark: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, BIOTROVE_TEST_MARK=mark, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "biotrove_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the search ended early: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.5)


def _reported(storage: Path, name: str) -> bool:
    """A trial has validated (so reported to Tune) at least once."""
    for metrics in (storage / name / "runs").glob("*/metrics.jsonl"):
        if '"kind": "eval"' in metrics.read_text():
            return True
    return False


@pytest.mark.slow
def test_asha_search_stops_weak_trials_and_writes_best_yaml(tmp_path, train_shards):
    (tmp_path / "space.yaml").write_text(SPACE)
    storage, mark = tmp_path / "searches", uuid.uuid4().hex
    result = run_subprocess(
        # two at a time, as on 2 cores: the second pair meets the first pair's values at the
        # first rung, so the worse of them is stopped whatever the machine
        *_search(train_shards, storage, "asha", "--num-samples", "2", "--max-concurrent", "2"),
        "--report-to", "tensorboard,mlflow", "--summary", tmp_path / "summary.json",
        env={"BIOTROVE_TEST_MARK": mark, "MLFLOW_TRACKING_URI": ""},
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not _gone(mark), "processes of the search survived it"
    rows = _rows(result.stdout)  # stdout holds the table only
    assert len(rows) == 4 and {float(r["optim.lr"]) for r in rows} == {0.003, 1.0}
    assert set(rows[0]) >= {"trial", "status", "optim.lr", "val/loss", "step", "run_dir"}
    stopped = [r for r in rows if r["status"] == "stopped"]
    finished = [r for r in rows if r["status"] == "finished"]
    assert stopped and finished and len(stopped) + len(finished) == 4
    assert all(int(r["step"]) == 2 for r in stopped) and all(r["step"] == "4" for r in finished)

    # every trial's run folder is a normal run folder (a stopped trial may have trained on a
    # little before Tune's decision reached it)
    run = Path(stopped[0]["run_dir"])
    records = json.loads(run_subprocess("info", run, "--format", "json").stdout)
    described = {r["key"]: r["value"] for r in records}
    assert described["latest"].startswith("step-")
    assert described["status"] in ("stopped", "finished")
    if described["status"] == "stopped":
        stopped_by = json.loads((run / "run.json").read_text())["stopped_by"]
        assert stopped_by == "stopped by the scheduler at step 2"
    best_run = Path(finished[0]["run_dir"])
    summary = json.loads((best_run / "run.json").read_text())
    assert summary["status"] == "finished" and set(summary["trackers"]) == {"tensorboard", "mlflow"}
    assert (best_run / "tensorboard").is_dir()
    assert summary["trackers"]["mlflow"]["uri"] == (storage / "asha" / "mlruns").as_uri()
    evals = [json.loads(x) for x in (best_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in evals if m["kind"] == "eval"] == [2, 4]

    exported = run_subprocess("export", best_run, "--out", tmp_path / "bundle")
    assert exported.returncode == 0, exported.stderr

    # the best trial, and its config as a train config that runs unchanged
    best = min(finished, key=lambda r: float(r["val/loss"]))
    assert rows[0]["trial"] == best["trial"]
    best_yaml = storage / "asha" / "best.yaml"
    summary_doc = json.loads((tmp_path / "summary.json").read_text())
    assert summary_doc["best"]["trial"] == best["trial"] and not summary_doc["interrupted"]
    assert summary_doc["best_config"] == str(best_yaml)
    text = best_yaml.read_text()
    assert text.startswith(f"# the best trial ({best['trial']}) of biotrove tune search asha")
    from biotrove_cli.core import config as configlib

    data = configlib.load_yaml(best_yaml)
    assert data["optim"]["lr"] == float(best["optim.lr"]) and data["run_dir"] == ""
    assert data["data"]["train"] == str(train_shards) and data["max_steps"] is None
    searched = json.loads(run_subprocess("info", storage / "asha", "--format", "json").stdout)
    described = {(r["section"], r["key"]): r["value"] for r in searched}
    assert described[("search", "metric")] == "val/loss"
    assert described[("best", "config")] == str(best_yaml)
    assert {k for s, k in described if s == "trials"} == {r["trial"] for r in rows}

    trained = run_subprocess(
        "train", "--config", best_yaml, "--steps", "5", "--run-dir", tmp_path / "final",
        "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    summary_rows = {r["key"]: r["value"] for r in json.loads(trained.stdout)}
    assert summary_rows["status"] == "finished" and summary_rows["steps"] == 5


@pytest.mark.slow
def test_a_killed_search_resumes_and_completes_the_remaining_trials(tmp_path, train_shards):
    (tmp_path / "space.yaml").write_text(SPACE)
    storage, mark = tmp_path / "searches", uuid.uuid4().hex
    args = _search(train_shards, storage, "killed", "--max-concurrent", "1")
    proc = _start(args, mark, tmp_path)
    try:
        _wait_for(lambda: _reported(storage, "killed"), proc)
    finally:
        proc.kill()  # kill -9 of biotrove tune: no chance to clean up by itself
        proc.communicate()
    assert not _gone(mark), "Ray processes outlived a killed biotrove tune"
    runs = list((storage / "killed" / "runs").iterdir())
    assert len(runs) == 1  # one trial at a time: the second never started

    result = run_subprocess(
        "tune", "--resume", "--name", "killed", "--storage-path", storage, "--format", "csv",
        env={"BIOTROVE_TEST_MARK": mark}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "resuming killed: 2 trial(s)" in result.stderr
    rows = _rows(result.stdout)
    assert len(rows) == 2 and all(r["status"] in ("finished", "stopped") for r in rows)
    first = json.loads((runs[0] / "run.json").read_text())
    assert first["resumed_from"] and first["status"] in ("finished", "stopped")
    assert (storage / "killed" / "best.yaml").is_file()
    assert not _gone(mark)


@pytest.mark.slow
def test_ctrl_c_stops_every_trial_and_leaves_nothing_running(tmp_path, train_shards):
    (tmp_path / "space.yaml").write_text(SPACE)
    storage, mark = tmp_path / "searches", uuid.uuid4().hex
    proc = _start(_search(train_shards, storage, "sigint"), mark, tmp_path)
    _wait_for(lambda: any((storage / "sigint" / "runs").glob("*/run.json")), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "continue it: biotrove tune --resume --name sigint" in err
    assert {r["status"] for r in _rows(out)} <= {"interrupted", "pending"}
    assert not _gone(mark), "processes of the search survived Ctrl-C"


# -- checked before Ray starts -------------------------------------------------------------------
def test_every_problem_of_the_space_at_once(cli, tmp_path, train_shards):
    space = tmp_path / "space.yaml"
    space.write_text(
        "optim.lr: {loguniform: [0, 1.0e-3]}\n"
        "optim.lrr: {choice: [1]}\n"
        "optim:\n  beta1: {choice: [0.9, 1.5]}\n  wd: {unifrom: [0, 0.3]}\n"
        "data.batch_size: {uniform: [16, 64]}\n"
        "optim.warmup: {randint: [5, 5]}\n"
        "run_dir: elsewhere\n"
    )
    code, out, err = cli(
        "tune", "--preset", "tiny", "--data", train_shards, "--val-data", train_shards,
        "--space", space, "--storage-path", tmp_path / "s",
    )  # fmt: skip
    assert code == 2 and out == "", err
    for problem in (
        "optim.lr: loguniform needs low > 0",
        "optim.lrr: not a training config key (did you mean 'optim.lr'?)",
        "optim.beta1: must be in [0, 1), got 1.5",
        "optim.wd: expected one distribution of loguniform, uniform, randint, choice, grid, "
        "got unifrom (did you mean 'uniform'?)",
        "data.batch_size: an integer key; uniform draws fractions",
        "optim.warmup: randint needs low < high",
        "run_dir: set by the search",
    ):
        assert problem in err, problem
    assert "7 configuration problems" in err and not (tmp_path / "s").exists()


def test_a_valid_space_and_its_ray_objects(train_shards):
    from ray.tune.search.sample import Categorical, Float, Integer

    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.tune.space import parse_space

    base = configlib.resolve(TrainConfig, preset="tiny")
    space = parse_space(
        {
            "optim": {"lr": {"loguniform": [1e-5, 1e-3]}},
            "optim.beta1": {"choice": [0.9, 0.98]},
            "data.batch_size": {"grid": [32, 64]},
            "optim.warmup": {"randint": [10, 100]},
            "optim.wd": {"uniform": [0.0, 0.3]},
            "seed": 7,
        },
        base,
    )
    assert space.keys == ["optim.lr", "optim.beta1", "data.batch_size", "optim.warmup", "optim.wd"]
    assert space.grid_size() == 2
    ray_space = space.to_ray()
    assert isinstance(ray_space["optim.lr"], Float) and isinstance(ray_space["optim.wd"], Float)
    assert isinstance(ray_space["optim.beta1"], Categorical)
    assert isinstance(ray_space["optim.warmup"], Integer)
    assert ray_space["data.batch_size"] == {"grid_search": [32, 64]} and ray_space["seed"] == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--metric", "val/speciez_top1"], "--metric val/speciez_top1: not a reported metric"),
        (["--grace-steps", "9", "--max-steps", "4"], "the grace period (9 steps) must be"),
        (["--grace-steps", "2"], "--grace-steps: these trials are counted in epochs"),
        (["--storage-path", "s3://bucket/x"], "a file system path is needed"),
    ],
)
def test_bad_search_settings_fail_before_ray_starts(cli, tmp_path, train_shards, extra, message):
    (tmp_path / "space.yaml").write_text(SPACE)
    code, out, err = cli(
        "tune", "--preset", "tiny", "--data", train_shards, "--val-data", train_shards,
        "--space", tmp_path / "space.yaml", "--storage-path", tmp_path / "s", *extra,
    )  # fmt: skip
    assert code == 2 and out == "" and message in err, err
    assert "Traceback" not in err


def test_without_ray_a_clear_error_and_hint(cli, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    (tmp_path / "space.yaml").write_text(SPACE)
    code, out, err = cli("tune", "--preset", "tiny", "--space", tmp_path / "space.yaml")
    assert code == 1 and out == ""
    assert "Error: biotrove tune needs Ray Tune and Ray Train, which are not installed" in err
    assert 'Hint: pip install "biotrove[tune]"' in err and "Traceback" not in err


def test_a_node_that_does_not_see_the_search_folder_says_so(tmp_path):
    from biotrove_cli.core.errors import TrainingError
    from biotrove_cli.core.tune.trial import check_shared

    with pytest.raises(TrainingError) as err:
        check_shared(tmp_path / "not-mounted-here")
    assert "needs --storage-path on a file system every node shares" in err.value.message
    assert "same path on every node" in err.value.hint
    (tmp_path / "search.yaml").write_text("name: s\n")
    check_shared(tmp_path)


def test_resume_needs_an_existing_search(cli, tmp_path):
    code, _, err = cli("tune", "--resume", "--name", "nope", "--storage-path", tmp_path)
    assert code == 1 and "no search to resume" in err
    code, _, err = cli("tune", "--resume")
    assert code == 2 and "--resume needs the search's --name" in err


def test_the_best_trial_is_among_those_that_trained_longest():
    from biotrove_cli.core.tune.results import best_record

    rows = [
        {"trial": "a", "status": "stopped", "step": 2, "m": 0.9},  # lucky early, stopped
        {"trial": "b", "status": "finished", "step": 8, "m": 0.6},
        {"trial": "c", "status": "finished", "step": 8, "m": 0.7},
        {"trial": "d", "status": "error", "step": 8, "m": 0.95},
    ]
    assert best_record(rows, "m", "max")["trial"] == "c"
    assert best_record(rows, "m", "min")["trial"] == "b"
    assert best_record([rows[3]], "m", "max") is None


def _rank_with_callbacks(rank: int, init_file: str, run: str, shards: str, out: str) -> None:
    """One of two ranks of a caller-owned group (as Ray Train's): which hooks run where."""
    import torch.distributed as dist

    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.training.hooks import Callbacks
    from biotrove_cli.core.training.trainer import train
    from biotrove_cli.core.training.validate import make_validator

    class Record(Callbacks):
        def __init__(self, every_rank: bool):
            self.every_rank = every_rank
            self.calls: list = []

        def on_step(self, metrics):
            self.calls.append(("step", metrics["step"]))

        def on_eval(self, metrics):
            self.calls.append(("eval", metrics["step"], "top1_species" in metrics))

        def on_checkpoint(self, path):
            self.calls.append(("checkpoint", Path(path).name))

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = configlib.resolve(
        TrainConfig,
        preset="tiny",
        overrides=[
            f"data.train={shards}", f"data.val={shards}", f"run_dir={run}", "max_steps=2",
            "val_every=1", "save_every=1", "data.batch_size=8", "data.workers=0",
            "data.val_limit=16",
        ],
    )  # fmt: skip
    everywhere, rank0 = Record(every_rank=True), Record(every_rank=False)
    train(cfg, threads=1, callbacks=[everywhere, rank0], validator_factory=make_validator)
    Path(out, f"rank{rank}.json").write_text(json.dumps([everywhere.calls, rank0.calls]))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_hooks_run_on_every_rank_when_they_ask(tmp_path, train_shards):
    """What Ray Train's report needs: every rank reaches the hook, the same number of times;
    rank 0's evaluation records carry the metrics."""
    import torch.multiprocessing as tmp

    args = (str(tmp_path / "pg-init"), str(tmp_path / "run"), str(train_shards), str(tmp_path))
    tmp.spawn(_rank_with_callbacks, args=args, nprocs=2, join=True)
    (every0, only0), (every1, only1) = (
        json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)
    )
    expected = [
        ["step", 1], ["checkpoint", "step-00000001.pt"], ["eval", 1, True],
        ["step", 2], ["checkpoint", "step-00000002.pt"], ["eval", 2, True],
    ]  # fmt: skip
    assert every0 == only0 == expected  # the last step: its checkpoint, then its evaluation
    assert every1 == [[*c[:2], False] if c[0] == "eval" else c for c in expected]
    assert only1 == []


def test_local_shard_paths_become_absolute_and_urls_stay(tmp_path, monkeypatch):
    from biotrove_cli.cli.tune import _absolute

    monkeypatch.chdir(tmp_path)
    spec = "shards/train/shard-{000000..000003}.tar::s3://bucket/x.tar::pipe:cat a.tar"
    assert _absolute(spec) == (
        f"{tmp_path}/shards/train/shard-{{000000..000003}}.tar::s3://bucket/x.tar::pipe:cat a.tar"
    )
    assert _absolute(None) is None
