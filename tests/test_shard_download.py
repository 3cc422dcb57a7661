"""``biotrove shard --download`` against a local HTTP server with slow, 404 and broken answers."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biotrove_cli.core.data.download import DownloadJob, download_all, read_status
from biotrove_cli.core.data.sample import sample_meta
from biotrove_cli.core.data.shards import read_shard


class _Server:
    """Serves ``/{kind}/{name}``: ok, missing (404), slow, truncated, reset, flaky (503 once)."""

    def __init__(self, files: dict[str, bytes], slow_s: float = 1.5):
        self.files = files
        self.slow_s = slow_s
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                _, kind, name = self.path.split("/", 2)
                with server.lock:
                    server.hits[self.path] += 1
                    hits = server.hits[self.path]
                body = server.files.get(name.split(".")[0], b"")
                try:
                    if kind == "missing":
                        self.send_error(404, "Not Found")
                        return
                    if kind == "slow":
                        time.sleep(server.slow_s)
                    if kind == "flaky" and hits == 1:
                        self.send_error(503, "Busy")
                        return
                    if kind == "reset":
                        linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                        self.connection.close()
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if kind == "truncated":
                        self.wfile.write(body[: len(body) // 3])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client gave up (timeout): nothing to do

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # resets are on purpose
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


KINDS = ("ok", "flaky", "missing", "slow", "truncated", "reset")


@pytest.fixture
def photos(small_world):
    return {p.photo_id: p for p in small_world["photos"]}


def test_download_then_shard(small_world, photos, cli, tmp_path):
    ids = sorted(photos, key=int)
    local_ids, remote_ids = ids[:4], ids[4 : 4 + len(KINDS)]
    files = {pid: photos[pid].path.read_bytes() for pid in remote_ids}
    images = tmp_path / "images"
    images.mkdir()
    for pid in local_ids:
        (images / f"{pid}.jpg").write_bytes(photos[pid].path.read_bytes())
    with _Server(files) as srv:
        kind_of = dict(zip(remote_ids, KINDS, strict=True))
        cols = {k: [] for k in ("photo_id", "scientificName", "kingdom", "phylum", "class",
                                "order", "family", "genus", "species", "common_name",
                                "photo_url")}  # fmt: skip
        for pid in local_ids + remote_ids:
            t = photos[pid].taxon
            cols["photo_id"].append(int(pid))
            cols["scientificName"].append(t.scientific_name)
            for rank, name in zip(("kingdom", "phylum", "class", "order", "family", "genus",
                                   "species"), t.names, strict=True):  # fmt: skip
                cols[rank].append(name)
            cols["common_name"].append(t.common_name)
            kind = kind_of.get(pid, "missing")
            cols["photo_url"].append(f"{srv.url}/{kind}/{pid}.jpg")
        meta = tmp_path / "meta.parquet"
        pq.write_table(pa.table(cols), meta)
        out = tmp_path / "out"
        t0 = time.monotonic()
        code, stdout, stderr = cli(
            "shard", meta, "--images", images, "--out", out, "--download",
            "--download-timeout", "0.5", "--download-retries", "2", "--workers", "0",
            "--format", "json", "--summary", tmp_path / "summary.json",
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        hits = dict(srv.hits)
    assert code == 0, stderr
    doc = json.loads((tmp_path / "summary.json").read_text())
    dl = doc["download"]
    assert dl["requested"] == len(KINDS) and dl["downloaded"] == 2 and dl["failed"] == 4
    assert dl["errors"] == {"http_404": 1, "timeout": 1, "truncated": 1, "connection": 1}
    total = json.loads(stdout)[0]
    assert total["written"] == 4 + 2 and total["failures"] == "missing=4"
    # the fetched photos are on disk, byte for byte, and in the shards
    by_kind = {k: pid for pid, k in kind_of.items()}
    for kind in ("ok", "flaky"):
        pid = by_kind[kind]
        assert (images / f"{pid}.jpg").read_bytes() == files[pid]
    keys = {
        s["__key__"]: sample_meta(s)
        for tar in (out / "train").glob("*.tar")
        for s in read_shard(tar)
    }
    assert set(keys) == {*local_ids, by_kind["ok"], by_kind["flaky"]}
    assert keys[by_kind["ok"]]["url"].endswith(f"/ok/{by_kind['ok']}.jpg")
    # one status line per URL, with what happened
    status = read_status(out / "downloads.jsonl")
    assert {r["status"] for r in status.values()} == {"ok", "failed"}
    st = {url.split("/")[3]: rec for url, rec in status.items()}
    assert st["ok"]["attempts"] == 1 and st["flaky"]["attempts"] == 2
    assert st["missing"]["http_status"] == 404 and st["missing"]["permanent"] is True
    assert st["truncated"]["error"] == "truncated" and st["truncated"]["attempts"] == 3
    assert st["slow"]["error"] == "timeout" and st["reset"]["error"] == "connection"
    # 404 is not retried; transient errors are, with backoff
    assert hits[f"/missing/{by_kind['missing']}.jpg"] == 1
    assert hits[f"/truncated/{by_kind['truncated']}.jpg"] == 3
    assert hits[f"/flaky/{by_kind['flaky']}.jpg"] == 2
    assert elapsed < 30  # bounded by timeouts, not hung on the slow server


def test_download_resumes_without_refetching(small_world, photos, tmp_path):
    ids = sorted(photos, key=int)[:3]
    files = {pid: photos[pid].path.read_bytes() for pid in ids}
    status = tmp_path / "out" / "downloads.jsonl"
    images = tmp_path / "img"
    with _Server(files, slow_s=0.0) as srv:
        jobs = [
            DownloadJob(f"{srv.url}/ok/{ids[0]}.jpg", images / f"{ids[0]}.jpg"),
            DownloadJob(f"{srv.url}/ok/{ids[1]}.jpg", images / f"{ids[1]}.jpg"),
            DownloadJob(f"{srv.url}/missing/{ids[2]}.jpg", images / f"{ids[2]}.jpg"),
            DownloadJob("file:///etc/hostname", images / "evil.jpg"),
        ]
        first = download_all(jobs, status, workers=3, timeout=2, retries=1, backoff=0.01)
        assert (first.downloaded, first.failed) == (2, 2)
        assert first.errors == {"http_404": 1, "unsupported_url": 1}
        assert not (images / "evil.jpg").exists()  # only http(s) is fetched
        hits_after_first = dict(srv.hits)
        # a torn last line (power loss while appending) is ignored
        with open(status, "a") as fh:
            fh.write('{"url": "http://x/trunc')
        second = download_all(jobs, status, workers=3, timeout=2, retries=1, backoff=0.01)
        assert second.cached == 2 and second.skipped == 2 and second.downloaded == 0
        assert dict(srv.hits) == hits_after_first  # nothing asked again
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{i}.jpg" for i in ids[:2])
    assert not list(Path(images).glob(".*.tmp"))
