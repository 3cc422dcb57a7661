"""Experiment trackers (--report-to): TensorBoard events, an offline wandb run and an MLflow
file store each hold the training loss; each is opt-in; a missing one fails before training."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tests.conftest import run_subprocess


def read_wandb_history(run_dir: Path) -> list[dict[str, float]]:
    """The history rows of an offline wandb run (its ``.wandb`` transaction log: a LevelDB-style
    log of 32 KiB blocks holding protobuf records), read independently of wandb's own code."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunks, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind == 2:  # first
            chunks = chunk
        elif kind == 3:  # middle
            chunks += chunk
        elif kind == 4:  # last
            records.append(chunks + chunk)
    rows = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append(
                {
                    (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return rows


def read_tensorboard(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def read_mlflow(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    history = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


@pytest.mark.slow
def test_every_tracker_holds_the_training_loss(tmp_path, train_shards):
    run = tmp_path / "run"
    result = run_subprocess(
        "train",
        "--preset",
        "tiny",
        "--data",
        train_shards,
        "--val-data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "4",
        "--batch-size",
        "16",
        "--workers",
        "0",
        "log_every=1",
        "val_every=2",
        "--report-to",
        "tensorboard,wandb,mlflow",
        "--format",
        "json",
        env={"WANDB_MODE": "offline", "MLFLOW_TRACKING_URI": ""},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0] == {"key": "run_dir", "value": str(run)}  # stdout clean
    logged = {
        m["step"]: m["loss"]
        for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if m["kind"] == "train"
    }
    assert sorted(logged) == [1, 2, 3, 4]
    info = json.loads((run / "run.json").read_text())["trackers"]

    tb = read_tensorboard(Path(info["tensorboard"]["dir"]), "train/loss")
    assert [s for s, _ in tb] == [1, 2, 3, 4]
    assert [v for _, v in tb] == pytest.approx([logged[s] for s in (1, 2, 3, 4)], rel=1e-6)
    assert len(read_tensorboard(Path(info["tensorboard"]["dir"]), "val/species_top1")) == 2

    assert info["wandb"]["mode"] == "offline"
    history = read_wandb_history(run)
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert losses == pytest.approx([logged[s] for s in (1, 2, 3, 4)], rel=1e-6)
    assert any("val/loss" in row for row in history)

    assert info["mlflow"]["uri"] == (run / "mlruns").resolve().as_uri()
    ml = read_mlflow(info["mlflow"]["uri"], info["mlflow"]["run_id"], "train/loss")
    assert [s for s, _ in ml] == [1, 2, 3, 4]
    assert [v for _, v in ml] == pytest.approx([logged[s] for s in (1, 2, 3, 4)], rel=1e-6)

    described = run_subprocess("info", run, "--format", "json")
    rows = {r["key"]: r["value"] for r in json.loads(described.stdout)}
    assert rows["tensorboard"] == info["tensorboard"]["dir"]
    assert info["wandb"]["id"] in rows["wandb"] and "offline" in rows["wandb"]
    assert info["mlflow"]["run_id"] in rows["mlflow"]


def test_trackers_are_opt_in(cli, tmp_path, train_shards):
    run = tmp_path / "run"
    code, out, err = cli(
        "train",
        "--preset",
        "tiny",
        "--data",
        train_shards,
        "--run-dir",
        run,
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--format",
        "json",
    )
    assert code == 0, err
    assert not (run / "tensorboard").exists() and not (run / "wandb").exists()
    assert "trackers" not in json.loads((run / "run.json").read_text())
    assert (run / "metrics.jsonl").is_file()


def test_a_missing_tracker_fails_before_training(cli, tmp_path, train_shards, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    run = tmp_path / "run"
    code, out, err = cli(
        "train", "--preset", "tiny", "--data", train_shards, "--run-dir", run,
        "--steps", "1", "--report-to", "tensorboard,wandb",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "Error: --report-to wandb: wandb is not installed" in err
    assert 'pip install "biotrove[wandb]"' in err and "Traceback" not in err
    assert not run.exists()


def test_an_unknown_tracker_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("train", "--preset", "tiny", "--report-to", "tensorboard,comet")
    assert code == 2 and "unknown tracker 'comet'" in err and "tensorboard, wandb, mlflow" in err
    code, _, err = cli("train", "--preset", "tiny", "--print-config", "tracking.report_to=[x]")
    assert code == 2 and "tracking.report_to: unknown tracker 'x'" in err


def test_metric_names_shared_by_trackers_and_tune():
    from biotrove_cli.core.training.trackers import tracker_metrics

    train = {"kind": "train", "step": 3, "epoch": 0, "loss": 2.5, "lr": 1e-4, "text_type": "sci"}
    assert tracker_metrics(train) == {"train/loss": 2.5, "train/lr": 1e-4}
    val = {"kind": "eval", "step": 3, "loss": 1.9, "top1_species": 0.5, "top5_genus": 0.75}
    assert tracker_metrics(val | {"val_images": 48}) == {
        "val/loss": 1.9,
        "val/species_top1": 0.5,
        "val/genus_top5": 0.75,
        "val/images": 48.0,
    }
