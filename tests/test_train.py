"""biotrove train: learning through torchrun, resume after kill -9, preemption, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_subprocess

TINY = ["--preset", "tiny", "log_every=1"]


def _start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "biotrove_cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _wait_for(predicate, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended early ({proc.returncode}): {err[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def _ckpts(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("step-*.pt"))


def _metrics(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _species_accuracy(run: Path, shards: Path) -> float:
    """Zero-shot species accuracy on the held-out val split, computed independently here."""
    import torch

    from biotrove_cli.core.data import shards as shardlib
    from biotrove_cli.core.data.images import decode
    from biotrove_cli.core.data.sample import sample_image_bytes, sample_meta, taxon_from_meta
    from biotrove_cli.core.evaluation.templates import SIMPLE
    from biotrove_cli.core.evaluation.text import class_prompts, encode_prompts
    from biotrove_cli.core.models.load import load_model
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    lm = load_model(run)
    bank = LabelBank.load(shards)
    emb = encode_prompts(lm, class_prompts(bank, Rank.SPECIES, "taxon", SIMPLE))
    right = total = 0
    for tar in shardlib.resolve_shards(shards, split="val"):
        for sample in shardlib.read_shard(tar):
            truth = bank.match(taxon_from_meta(sample_meta(sample)), Rank.SPECIES)
            img = lm.preprocess(decode(sample_image_bytes(sample)).image)[None]
            with torch.no_grad():
                f = torch.nn.functional.normalize(lm.model.encode_image(img), dim=-1)
            right += int((f @ emb.T).argmax().item() == truth)
            total += 1
    return right / total


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_gloo_run_learns(tmp_path, train_shards):
    run = tmp_path / "run"
    result = run_subprocess(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--val-data",
        train_shards,
        "--run-dir",
        run,
        "--nproc-per-node",
        "2",
        "--batch-size",
        "32",
        "--steps",
        "150",
        "--workers",
        "0",
        "save_every=50",
        "val_every=75",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert "through torchrun" in result.stderr and "2 process(es)" in result.stderr
    summary = {r["key"]: r["value"] for r in json.loads(result.stdout)}
    assert summary["status"] == "finished" and summary["steps"] == 150
    steps = [m for m in _metrics(run) if m["kind"] == "train"]
    early = sum(m["loss"] for m in steps[:10]) / 10
    late = sum(m["loss"] for m in steps[-10:]) / 10
    assert late < early - 1.0, (early, late)
    acc = _species_accuracy(run, train_shards)
    assert acc > 0.5, acc  # 8 species: chance is 0.125
    # the periodic validation (the eval engine, on rank 0) agrees and was logged
    evals = [m for m in _metrics(run) if m["kind"] == "eval"]
    assert [e["step"] for e in evals] == [75, 150]
    last = evals[-1]
    assert abs(last["top1_species"] - acc) < 1e-6
    assert last["top1_kingdom"] >= last["top1_genus"] >= last["top1_species"]
    assert summary["val_top1_species"] == round(acc, 4)
    info = run_subprocess("info", run, "--format", "json")
    assert info.returncode == 0 and '"status"' in info.stdout


@pytest.mark.slow
def test_kill_9_then_resume_latest(tmp_path, train_shards):
    run = tmp_path / "run"
    args = [
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "24",
        "--workers",
        "1",
        "save_every=4",
        "keep_last=10",
    ]
    proc = _start(*args)
    _wait_for(lambda: len(_ckpts(run)) >= 2, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _ckpts(run)
    last_step = max(int(p.stem.split("-")[1]) for p in saved)
    assert last_step < 24
    # a crash while copying: the newest checkpoint is truncated; resume skips it, whether or
    # not the kill landed before the `latest` pointer moved to it (the newest complete file
    # wins; the pointer is only a hint)
    newest = max(saved, key=lambda p: int(p.stem.split("-")[1]))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])
    resumed = run_subprocess(*args, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping" in resumed.stderr and newest.name in resumed.stderr
    assert "resuming from" in resumed.stderr
    steps = [m["step"] for m in _metrics(run) if m["kind"] == "train"]
    assert steps[-1] == 24
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["resumed_from"]


@pytest.mark.slow
def test_sigterm_saves_and_exits_75(tmp_path, train_shards):
    run = tmp_path / "run"
    proc = _start(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "500",
        "--workers",
        "0",
        "save_every=1000",
    )
    _wait_for(lambda: (run / "metrics.jsonl").exists() and len(_metrics(run)) >= 3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "checkpoint saved" in err and "rerun the same command" in err
    assert _ckpts(run), "no checkpoint after preemption"
    assert json.loads((run / "run.json").read_text())["status"] == "preempted"


def test_schedule_change_on_resume_is_refused(tmp_path, train_shards):
    run = tmp_path / "run"
    base = ["train", *TINY, "--data", train_shards, "--run-dir", run, "--workers", "0"]
    first = run_subprocess(*base, "--steps", "2")
    assert first.returncode == 0, first.stderr
    changed = run_subprocess(*base, "--steps", "4", "--resume", "latest", "optim.lr=0.1")
    assert changed.returncode == 1
    assert "optim.lr: 0.002 -> 0.1" in changed.stderr and "max_steps: 2 -> 4" in changed.stderr
    assert "--allow-config-change" in changed.stderr
    allowed = run_subprocess(
        *base, "--steps", "4", "--resume", "latest", "optim.lr=0.1", "--allow-config-change"
    )
    assert allowed.returncode == 0, allowed.stderr


def test_non_finite_losses_stop_with_a_clear_error(tmp_path, train_shards):
    run = tmp_path / "run"
    result = run_subprocess(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--workers",
        "0",
        "--steps",
        "60",
        "optim.lr=1e12",
        "optim.warmup=1",
        "max_nonfinite=2",
        "save_every=1",
    )
    assert result.returncode == 1, result.stderr
    assert "non-finite losses in a row" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--workers", "64"], "too few shards"),
        (["--batch-size", "100000"], "larger than the data"),
        (["data.text_type=nonsense"], "data.text_type"),
    ],
)
def test_bad_plans_fail_before_training(tmp_path, train_shards, extra, message):
    run = tmp_path / "run"
    result = run_subprocess("train", *TINY, "--data", train_shards, "--run-dir", run, *extra)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert not (run / "checkpoints").exists()


def test_empty_or_missing_data(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_subprocess(
        "train", *TINY, "--data", tmp_path / "empty", "--run-dir", tmp_path / "run"
    )
    assert result.returncode == 1 and "no shards" in result.stderr
    result = run_subprocess("train", *TINY, "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "no training data" in result.stderr


def test_dry_run_reports_the_plan(cli, tmp_path, train_shards):
    code, out, err = cli(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        tmp_path / "r",
        "--dry-run",
        "--format",
        "json",
    )
    assert code == 0, err
    rows = {r["key"]: r["value"] for r in json.loads(out)}
    assert (
        rows["shards"] >= 8
        and rows["species_in_dataset"] == 8
        and rows["total_steps"] == (rows["steps_per_epoch"] * 10)
    )
    assert not (tmp_path / "r").exists()


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the torchrun workers started under ``parent``."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if "biotrove_cli.cli.workers" not in cmd:
            continue
        envd = dict(e.decode().split("=", 1) for e in env if b"=" in e)
        if envd.get("TORCHELASTIC_RUN_ID") and "RANK" in envd:
            found[int(envd["RANK"])] = int(d.name)
    return found


@pytest.mark.slow
@pytest.mark.distributed
def test_a_dead_worker_stops_the_job_and_max_restarts_resumes(tmp_path, train_shards):
    run = tmp_path / "run"
    args = [
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--nproc-per-node",
        "2",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--steps",
        "40",
        "save_every=5",
    ]
    # without restarts: the job ends cleanly with the failed rank named (no hang)
    proc = _start(*args)
    _wait_for(lambda: len(_ckpts(run)) >= 1, proc=proc)
    pids = _worker_pids(proc.pid)
    os.kill(pids[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "rank 1" in err, err
    # with --max-restarts, torchrun restarts the workers and they resume by themselves
    run2 = tmp_path / "run2"
    args2 = [a if a != str(run) else str(run2) for a in map(str, args)] + ["--max-restarts", "1"]
    proc = _start(*args2)
    _wait_for(lambda: len(_ckpts(run2)) >= 1, proc=proc)
    os.kill(_worker_pids(proc.pid)[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resuming from" in err
    assert [m["step"] for m in _metrics(run2) if m["kind"] == "train"][-1] == 40


def test_random_text_type_is_the_reference_choice():
    import random

    from biotrove_cli.core.training.data import step_text_type

    for step in range(200):
        random.seed(step)  # BioTrove/BioCLIP train.py: random.seed(step); random.choice([...])
        ref = random.choice(["sci", "com", "taxon", "sci_com", "taxon_com"])
        assert step_text_type("random", step) == ref
    assert step_text_type("taxonTag", 7) == "taxonTag"


def test_no_weight_decay_on_gains_biases_and_logit_scale(tiny_model):
    from biotrove_cli.core.training.optim import param_groups

    groups = param_groups(tiny_model.model, wd=0.2)
    named = dict(tiny_model.model.named_parameters())
    decayed = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.2
    assert id(named["logit_scale"]) not in decayed
    assert all(id(p) not in decayed for n, p in named.items() if p.ndim < 2 or "bias" in n)
    assert id(named["visual.conv1.weight"]) in decayed


def test_gradient_accumulation_and_per_sample_text_types(cli, tmp_path, train_shards):
    run = tmp_path / "run"
    code, out, err = cli(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "3",
        "--workers",
        "0",
        "--batch-size",
        "16",
        "optim.accum=2",
        "data.text_type=random-per-sample",
        "--format",
        "json",
    )
    assert code == 0, err
    steps = [m for m in _metrics(run) if m["kind"] == "train"]
    assert [m["step"] for m in steps] == [1, 2, 3]
    assert {m["text_type"] for m in steps} == {"per-sample"}
    cfg = (run / "config.yaml").read_text()
    assert "accum: 2" in cfg and "text_type: random-per-sample" in cfg


@pytest.mark.slow
@pytest.mark.distributed
def test_sigusr1_to_the_launcher_preempts_every_rank(tmp_path, train_shards):
    run = tmp_path / "run"
    proc = _start(
        "train",
        *TINY,
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "500",
        "--nproc-per-node",
        "2",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "save_every=1000",
    )
    _wait_for(lambda: (run / "metrics.jsonl").exists() and len(_metrics(run)) >= 3, proc=proc)
    proc.send_signal(signal.SIGUSR1)  # what SLURM sends before preempting (--signal=USR1@N)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "stopped by SIGUSR1" in err and "rerun the same command" in err
    assert "[rank 1]" not in err  # one report, not one per rank
    assert _ckpts(run) and json.loads((run / "run.json").read_text())["status"] == "preempted"


def _rank_in_a_callers_group(rank: int, init_file: str, run: str, shards: str, out: str) -> None:
    """One rank of a job whose process group the caller set up (as Ray Train does): no
    torchrun variables, the group already initialised before train() starts."""
    import torch.distributed as dist

    from biotrove_cli.core import config as configlib
    from biotrove_cli.core.training.config import TrainConfig
    from biotrove_cli.core.training.trainer import train

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = configlib.resolve(
        TrainConfig,
        preset="tiny",
        overrides=[
            f"data.train={shards}",
            f"run_dir={run}",
            "max_steps=3",
            "data.batch_size=16",
            "data.workers=0",
            "log_every=1",
        ],
    )
    result = train(cfg, threads=1)
    report = {"steps": result.steps, "group_still_up": dist.is_initialized()}
    dist.barrier()  # the group still works after train()
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_the_trainer_uses_a_process_group_its_caller_set_up(tmp_path, train_shards):
    import torch.multiprocessing as tmp

    run = tmp_path / "run"
    args = (str(tmp_path / "pg-init"), str(run), str(train_shards), str(tmp_path))
    tmp.spawn(_rank_in_a_callers_group, args=args, nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports == [{"steps": 3, "group_still_up": True}] * 2
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert [m["step"] for m in _metrics(run) if m["kind"] == "train"] == [1, 2, 3]
    assert _ckpts(run)[-1].name == "step-00000003.pt"


def test_the_newest_complete_checkpoint_wins_over_a_stale_latest_pointer(
    tmp_path, caplog, monkeypatch
):
    """kill -9 between writing step-4 and moving `latest` leaves the pointer on step-3: the
    newest complete file still wins, and a truncated newest one is skipped with a warning."""
    import logging

    monkeypatch.setattr(logging.getLogger("biotrove"), "propagate", True)  # to caplog
    from biotrove_cli.core.errors import TrainingError
    from biotrove_cli.core.models.checkpoint import resolve_latest, save_checkpoint, write_latest
    from biotrove_cli.core.training.state import find_resume_checkpoint

    ckdir = tmp_path / "checkpoints"
    assert find_resume_checkpoint(tmp_path, "auto") is None  # an empty folder: a fresh start
    for step in (2, 3, 4):
        save_checkpoint(ckdir / f"step-{step:08d}.pt", {"step": step})
    write_latest(tmp_path, ckdir / "step-00000003.pt")  # the kill landed before the move
    assert resolve_latest(tmp_path) == ckdir / "step-00000004.pt"
    newest = ckdir / "step-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="biotrove"):
        assert find_resume_checkpoint(tmp_path, "auto") == ckdir / "step-00000003.pt"
    assert "skipping" in caplog.text and newest.name in caplog.text
    for p in ckdir.glob("step-*.pt"):  # nothing complete left: never a fresh start over them
        p.write_bytes(b"")
    with pytest.raises(TrainingError, match="none of them is complete"):
        find_resume_checkpoint(tmp_path, "auto")


def test_a_finished_run_missing_its_last_evaluation_evaluates_on_rerun(cli, tmp_path, train_shards):
    """A run stopped after its last checkpoint but before its last evaluation (a kill, a
    search stopped mid-trial) evaluates that step when rerun, instead of ending without it."""
    run = tmp_path / "run"
    args = (
        "train", *TINY, "--data", train_shards, "--val-data", train_shards, "--run-dir", run,
        "--steps", "2", "--workers", "0", "--batch-size", "16", "--format", "json",
    )  # fmt: skip
    code, _, err = cli(*args)
    assert code == 0, err
    evals = [m for m in _metrics(run) if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [2]
    metrics = run / "metrics.jsonl"
    kept = [line for line in metrics.read_text().splitlines() if '"eval"' not in line]
    metrics.write_text("\n".join(kept) + "\n")
    code, _, err = cli(*args)
    assert code == 0, err
    evals = [m for m in _metrics(run) if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [2] and "loss" in evals[0]
    code, _, err = cli(*args)  # complete now: a rerun adds nothing
    assert code == 0, err
    assert [m["step"] for m in _metrics(run) if m["kind"] == "eval"] == [2]
