"""Shards anywhere: training and eval from a loopback HTTP server, pipe: commands and object
store URLs, with faults injected by the server, truncated shards and kill -9 + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="http(s) shards need curl")
TRAIN = ["train", "--preset", "tiny", "--batch-size", "4", "--workers", "1", "log_every=1"]
TRAIN += ["data.shuffle_buffer=6"]  # a real shuffle that does not read the tiny set many times


# -- a shard server on 127.0.0.1 that can misbehave ----------------------------------------------
class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        path = urlsplit(self.path).path
        self.server.requests.append(path)
        plan = self.server.faults.get(path)
        action = (plan.pop(0) if len(plan) > 1 else plan[0]) if plan else "ok"
        if action in ("404", "500"):
            self.send_error(int(action))
            return
        if action == "ok":
            super().do_GET()
            return
        data = (self.server.root / path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if action == "reset":  # half the tar, then a TCP reset
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif action == "stall":  # the start of the tar, then nothing until the test ends
            self.wfile.write(data[:1024])
            self.wfile.flush()
            self.server.release.wait(60)
        self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # the socket was reset on purpose
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.root = root
        self.faults: dict[str, list[str]] = {}  # path -> action per request (the last one stays)
        self.requests: list[str] = []
        self.release = threading.Event()


@pytest.fixture
def server(dataset):
    """Serves the dataset folder; ``server.url`` is its root URL."""
    srv = _Server(dataset)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(10)


# -- data, a model, what training saw -------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """4 species x 8 photos, 64 px: train 6 shards x 4 samples, val 2 x 4, with sizes.json."""
    from biotrove_cli.core.data.shard import ShardConfig, shard_dataset
    from biotrove_cli.core.data.world import generate_world, write_metadata
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from tests.conftest import DEMO_SPECIES

    root = tmp_path_factory.mktemp("remote-world")
    taxa = LabelBank.load(DEMO_SPECIES).taxa[:4]
    photos = generate_world(taxa, root / "images", images_per_species=8, seed=3, size=(96, 72))
    meta = write_metadata(photos, root / "metadata.parquet")
    cfg = ShardConfig(
        metadata=[meta],
        images=root / "images",
        out=root / "shards",
        image_size=64,
        val_fraction=0.25,
        samples_per_shard=4,
        seed=0,
        workers=1,
    )
    shard_dataset(cfg)
    out = root / "shards"
    assert len(list((out / "train").glob("*.tar"))) == 6
    return out


def _pattern(base: str, split: str = "train", n: int = 6) -> str:
    return f"{base}/{split}/shard-{{000000..{n - 1:06d}}}.tar"


def _shard_keys(dataset: Path, name: str, split: str = "train") -> set[str]:
    from biotrove_cli.core.data.shards import read_shard

    return {s["__key__"] for s in read_shard(dataset / split / name)}


@pytest.fixture
def seen(monkeypatch):
    """Every batch the Trainer trains on: (epoch, batch, keys, captions), in order."""
    from biotrove_cli.core.training.trainer import Trainer

    batches: list[tuple] = []
    step = Trainer.step

    def record(self, batch):
        batches.append((self.epoch, batch["batch"], batch["keys"], batch["texts"]))
        return step(self, batch)

    monkeypatch.setattr(Trainer, "step", record)
    return batches


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m["kind"] == "train"]


def _summary(out: str) -> dict[str, str]:
    return dict(line.split(",", 1) for line in out.strip().splitlines()[1:])


# -- the same batches wherever the shards are ------------------------------------------------------
@needs_curl
def test_http_and_pipe_train_on_exactly_the_local_batches(cli, dataset, server, seen, tmp_path):
    runs = {}
    sources = {
        "local": str(dataset),
        "http": _pattern(server.url),
        "pipe": f"pipe:cat {_pattern(str(dataset))}",
    }
    for name, data in sources.items():
        run = tmp_path / name
        code, out, err = cli(*TRAIN, "--data", data, "--run-dir", run, "--steps", "8")
        assert code == 0, err
        runs[name], seen[:] = list(seen), []
        assert _summary(out)["skipped_shards"] == "0"
        assert _summary(out)["lost_samples"] == "0"
    local = runs["local"]
    assert len(local) == 8 and [b[:2] for b in local][5:7] == [(0, 5), (1, 0)]
    every = set().union(*(_shard_keys(dataset, f"shard-{i:06d}.tar") for i in range(6)))
    assert {k for b in local for k in b[2]} <= every and all(t for b in local for t in b[3])
    assert runs["http"] == local
    assert runs["pipe"] == local
    # sizes.json and taxonomy.parquet came from beside the remote shards
    assert "/train/sizes.json" in server.requests and "/taxonomy.parquet" in server.requests
    assert (tmp_path / "http" / "labels.parquet").is_file()


@needs_curl
@pytest.mark.slow
def test_kill_9_and_resume_over_http_trains_the_same_batches(cli, dataset, server, seen, tmp_path):
    common = ["--steps", "8", "save_every=2", "keep_last=10"]
    code, _, err = cli(*TRAIN, "--data", str(dataset), "--run-dir", tmp_path / "ref", *common)
    assert code == 0, err
    reference = [list(b) for b in seen]
    # the same run over HTTP, in a process that stops before step 6 and is killed with -9
    log, marker, run = tmp_path / "batches.jsonl", tmp_path / "paused", tmp_path / "run"
    script = tmp_path / "recorded_train.py"
    script.write_text(RECORDER)
    args = [*TRAIN, "--data", _pattern(server.url), "--run-dir", str(run), *common]
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(script), str(log), str(marker)]
    proc = subprocess.Popen(
        [*cmd, "5", *args], env=env, cwd=REPO, start_new_session=True, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the first run never reached step 5"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / "checkpoints" / "step-00000004.pt").is_file()
    first = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    resumed = subprocess.run(
        [*cmd, "-1", *args, "--resume", "latest"], env=env, cwd=REPO, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    second = [json.loads(line) for line in log.read_text().splitlines()]
    assert [b["step"] for b in second] == [4, 5, 6, 7]  # it resumed from step 4
    trained = [b["batch"] for b in first if b["step"] < 4] + [b["batch"] for b in second]
    assert trained == reference
    # the batch the killed run trained after its checkpoint is the one the resumed run redid
    assert [b["batch"] for b in first if b["step"] == 4] == [second[0]["batch"]]


RECORDER = """
import json, sys, time
from biotrove_cli.core.training.trainer import Trainer

log, marker, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
step = Trainer.step

def record(self, batch):
    if self.global_step == pause_at:
        open(marker, "w").close()
        time.sleep(600)
    row = [self.epoch, batch["batch"], batch["keys"], batch["texts"]]
    with open(log, "a") as f:
        f.write(json.dumps({"step": self.global_step, "batch": row}) + "\\n")
    return step(self, batch)

Trainer.step = record
from biotrove_cli.cli.app import main
sys.exit(main(sys.argv[4:]))
"""


# -- network faults: retried or counted, never a hang ---------------------------------------------
@needs_curl
def test_faults_are_retried_or_counted_and_nothing_hangs(cli, dataset, server, seen, tmp_path):
    faults = {
        "shard-000001.tar": ["404"],  # missing: skipped at once, counted
        "shard-000002.tar": ["500", "ok"],  # a server error, then fine: retried
        "shard-000003.tar": ["reset", "ok"],  # connection reset mid-tar, then fine: retried
        "shard-000004.tar": ["stall"],  # stalls past the timeout every time: counted
    }
    server.faults = {f"/train/{name}": plan for name, plan in faults.items()}
    run = tmp_path / "run"
    extra = ["data.retries=1", "data.timeout=1", "--steps", "6"]

    # a hang guard, not a speed limit: a stalled read that never times out fails the test
    # instead of blocking the suite
    def hung(signum, frame):
        raise AssertionError("training hung on a stalled shard")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(600)
    try:
        code, out, err = cli(*TRAIN, "--data", _pattern(server.url), "--run-dir", run, *extra)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert code == 0, err
    url = f"{server.url}/train"
    assert f"{url}/shard-000001.tar: unreadable after 1 try" in err and "404" in err
    assert f"{url}/shard-000004.tar: unreadable after 2 tries (no data for 1 s" in err
    assert "0 of 4 samples read (sizes.json), 4 samples lost" in err
    assert "shard-000002" not in err and "shard-000003" not in err
    requests = server.requests
    assert requests.count("/train/shard-000001.tar") == 1  # a 404 is not retried
    assert requests.count("/train/shard-000004.tar") == 2  # one retry, then given up
    assert requests.count("/train/shard-000002.tar") >= 2  # failed first: retried
    assert requests.count("/train/shard-000003.tar") >= 2
    # the retried shards gave every sample; the failed ones none
    trained = {k for b in seen for k in b[2]}
    assert _shard_keys(dataset, "shard-000002.tar") | _shard_keys(dataset, "shard-000003.tar") <= (
        trained
    )
    assert not trained & (
        _shard_keys(dataset, "shard-000001.tar") | _shard_keys(dataset, "shard-000004.tar")
    )
    last = _metrics(run)[-1]
    assert (last["skipped_shards"], last["truncated_shards"], last["lost_samples"]) == (2, 0, 8)
    summary = _summary(out)
    assert summary["skipped_shards"] == "2" and summary["lost_samples"] == "8"
    # --strict: the first unreadable shard stops the run with its name
    server.faults = {"/train/shard-000001.tar": ["404"]}
    code, _, err = cli(*TRAIN, "--data", _pattern(server.url), "--run-dir", tmp_path / "strict",
                       "--steps", "6", "--strict")  # fmt: skip
    assert code == 1
    assert f"Error: {url}/shard-000001.tar: unreadable after 1 try" in err
    assert "--strict" in err and "Traceback" not in err


@needs_curl
def test_a_store_that_goes_down_stops_the_run_with_a_clear_error(cli, server, tmp_path):
    # the first shard answers once (the caption check before training), then every read fails
    server.faults = {"/train/shard-000000.tar": ["ok", "404"], "/train/shard-000001.tar": ["404"]}
    run = tmp_path / "run"
    code, _, err = cli(
        *TRAIN, "--data", _pattern(server.url, n=2), "--run-dir", run, "--steps", "4"
    )
    assert code == 1 and "Traceback" not in err
    assert "Error: 3 shards in a row gave no sample (the last: " in err
    assert "Hint: check the network" in err and "--resume latest" in err
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


# -- truncated shards (issue 13, item 4) ---------------------------------------------------------
@pytest.fixture
def truncated(dataset, tmp_path):
    """A copy of the dataset with train/shard-000002.tar and val/shard-000000.tar cut in half;
    returns (folder, samples left in the train shard, samples left in the val shard)."""
    from biotrove_cli.core.data.shards import read_shard

    out = tmp_path / "cut"
    shutil.copytree(dataset, out)
    left = []
    for rel in ("train/shard-000002.tar", "val/shard-000000.tar"):
        tar = out / rel
        tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
        left.append(len(list(read_shard(tar, on_problem=lambda p: None))))
    return out, left[0], left[1]


def test_a_truncated_train_shard_is_named_and_counted(cli, truncated, tmp_path):
    data, left, _ = truncated
    run = tmp_path / "run"
    code, out, err = cli(*TRAIN, "--data", data, "--run-dir", run, "--steps", "6")
    assert code == 0, err
    tar = data / "train" / "shard-000002.tar"
    assert f"{tar}: the shard ended early" in err
    assert f"{left} of 4 samples read (sizes.json), {4 - left} sample" in err
    last = _metrics(run)[-1]
    assert (last["skipped_shards"], last["truncated_shards"], last["lost_samples"]) == (
        0,
        1,
        4 - left,
    )
    assert _summary(out)["truncated_shards"] == "1"
    assert _summary(out)["lost_samples"] == str(4 - left)
    code, _, err = cli(*TRAIN, "--data", data, "--run-dir", tmp_path / "strict", "--strict")
    assert code == 1 and f"Error: {tar}: the shard ended early" in err


def test_a_truncated_val_shard_in_eval_is_named_and_counted(cli, truncated, tiny_ckpt, tmp_path):
    data, _, left = truncated
    tar = data / "val" / "shard-000000.tar"
    summary = tmp_path / "summary.json"
    code, out, err = cli("eval", "-m", tiny_ckpt, "--data", data, "--ranks", "genus",
                         "--format", "json", "--workers", "0", "--summary", summary)  # fmt: skip
    assert code == 0, err
    assert f"{tar}: the shard ended early" in err and f"{left} of 4 samples read" in err
    assert f"{4 - left} sample" in err and "lost against sizes.json" in err
    assert "unreadable, skipped" not in err  # a short shard is not an unreadable image
    doc = json.loads(summary.read_text())
    (rec,) = json.loads(out)
    assert rec["n_images"] == 4 + left and rec["n_unreadable"] == 0
    (problem,) = doc["models"][0]["shard_problems"]
    assert (problem["shard"], problem["kind"]) == (str(tar), "truncated")
    assert (problem["samples"], problem["expected"], problem["lost"]) == (left, 4, 4 - left)
    assert doc["models"][0]["lost_samples"] == 4 - left
    code, _, err = cli("eval", "-m", tiny_ckpt, "--data", data, "--strict", "--workers", "0")
    assert code == 1 and f"Error: {tar}: the shard ended early" in err


# -- pipe: for eval, object stores without their tool, no sizes.json ------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(load_model("biotrove-tiny:random").model.state_dict(), path)
    return path


def test_eval_reads_pipe_commands_like_local_shards(cli, dataset, tiny_ckpt, tmp_path):
    common = ["-m", tiny_ckpt, "--format", "json", "--workers", "0", "--ranks", "genus,species"]
    code, local, err = cli("eval", *common, "--data", dataset, "--summary", tmp_path / "l.json")
    assert code == 0, err
    piped = f"pipe:cat {_pattern(str(dataset), 'val', 2)}"
    code, out, err = cli("eval", *common, "--data", piped, "--summary", tmp_path / "p.json")
    assert code == 0, err
    assert json.loads(out) == json.loads(local)
    assert [r["n_images"] for r in json.loads(out)] == [8, 8]
    piped_doc = json.loads((tmp_path / "p.json").read_text())
    local_doc = json.loads((tmp_path / "l.json").read_text())
    assert piped_doc["labels"]["n_species"] == local_doc["labels"]["n_species"] == 4
    assert piped_doc["labels"]["source"].startswith(f"pipe:cat {dataset}/taxonomy.parquet")


@pytest.mark.parametrize(
    "url, tool",
    [
        ("s3://bucket/ds/train/shard-{000000..000003}.tar", "aws"),
        ("gs://bucket/ds/train/shard-000000.tar", "gcloud"),
    ],  # fmt: skip
)
def test_an_object_store_url_without_its_tool_is_a_clear_error(
    cli, monkeypatch, tmp_path, url, tool
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no aws, gcloud or gsutil here
    code, _, err = cli(*TRAIN, "--data", url, "--run-dir", tmp_path / "run", "--dry-run")
    assert code == 1
    assert f"Error: {url.replace('{000000..000003}', '000000')}: reading" in err
    assert f"`{tool}`" in err and "not on PATH" in err and "Hint: install" in err
    code, _, err = cli("eval", "-m", "x", "--data", url)
    assert code == 1 and "not on PATH" in err


def test_without_sizes_json_num_samples_gives_the_epoch(cli, dataset, tmp_path):
    data = tmp_path / "nosizes"
    shutil.copytree(dataset / "train", data / "train")
    (data / "train" / "sizes.json").unlink()
    spec = f"pipe:cat {_pattern(str(data))}"
    args = [*TRAIN, "--data", spec, "--run-dir", tmp_path / "run", "--dry-run", "--format", "csv"]
    code, _, err = cli(*args)
    assert code == 1 and "the number of training samples is unknown: no sizes.json" in err
    assert "data.num_samples=N" in err
    code, out, err = cli(*args, "data.num_samples=20")
    assert code == 0, err
    assert _summary(out)["samples_per_epoch"] == "20"


@needs_curl
def test_info_describes_remote_shards(cli, server, tmp_path):
    summary = tmp_path / "summary.json"
    code, out, err = cli("info", server.url, "--format", "json", "--summary", summary)
    assert code == 0, err
    assert isinstance(json.loads(out), list)  # the rows; the document is the summary
    doc = json.loads(summary.read_text())
    assert doc["kind"] == "shards" and doc["state"] == "complete"
    assert doc["splits"]["train"]["samples"] == 24 and doc["splits"]["val"]["shards"] == 2
    code, out, err = cli("info", _pattern(server.url), "--format", "json", "--summary", summary)
    assert code == 0, err
    doc = json.loads(summary.read_text())
    assert (doc["shards"], doc["samples"]) == (6, 24)
    assert doc["locations"][-1] == f"{server.url}/train/shard-000005.tar"
