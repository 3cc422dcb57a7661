"""A loopback server that answers like the Hugging Face Hub's file-resolve endpoint, for tests.

``HEAD /{repo}/resolve/{revision}/{file}`` answers with the headers huggingface_hub reads
(``X-Repo-Commit``, ``ETag`` = the file's sha256 as for LFS files, ``X-Linked-Size``,
``Content-Length``); ``GET`` serves the bytes, honouring ``Range: bytes=N-`` with 206 and
``Content-Range``. Unknown files get 404 with ``X-Error-Code: EntryNotFound``. Knobs make the
next GET cut the connection after some bytes, serve damaged bytes, or answer every request with
an HTTP error; every request is logged (method, path, Range, Authorization).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    auth: str | None


@dataclass
class FakeHub:
    """The served files (name -> bytes) of one repository, and the server's knobs."""

    repo: str
    files: dict[str, bytes]
    requests: list[Request] = field(default_factory=list)
    cut_next_get: int = 0  # send this many bytes of the next GET, then close the connection
    damage_gets: int = 0  # flip a byte in the body of this many GETs to come
    status: int | None = None  # answer every request with this HTTP status
    url: str = ""

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def gets(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET"]

    # -- answers ---------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append(
            Request(h.command, h.path, h.headers.get("Range"), h.headers.get("Authorization"))
        )
        m = re.fullmatch(rf"/{re.escape(self.repo)}/resolve/([^/]+)/(.+)", h.path)
        data = self.files.get(m.group(2)) if m else None
        if self.status is not None:
            self._empty(h, self.status)
            return
        if data is None:
            self._empty(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            return
        etag = hashlib.sha256(data).hexdigest()
        start = 0
        rng = h.headers.get("Range")
        if body and rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
        part = data[start:]
        if body and self.damage_gets:
            self.damage_gets -= 1
            part = bytes([part[0] ^ 0xFF]) + part[1:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{etag}"')
        h.send_header("X-Linked-Etag", f'"{etag}"')
        h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(part)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        if self.cut_next_get:
            cut, self.cut_next_get = self.cut_next_get, 0
            h.wfile.write(part[:cut])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(part)

    @staticmethod
    def _empty(h: BaseHTTPRequestHandler, status: int, headers: dict | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()


def fabricated_checkpoint(seed: int = 0) -> bytes:
    """A BioTrove-style open_clip training checkpoint of the tiny architecture: ``module.``
    prefixes (DDP), AdamW state, and numpy scalars in the pickle, as the published files have."""
    import io

    import numpy as np
    import torch

    from biotrove_cli.core.models.build import build_model

    torch.manual_seed(seed)
    model, _ = build_model("biotrove-tiny")
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    params = list(model.parameters())
    optimizer = {
        "state": {
            i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(p)}
            for i, p in enumerate(params[:4])
        },
        "param_groups": [{"lr": np.float64(1e-5), "betas": (0.9, 0.98), "params": [0, 1, 2, 3]}],
    }
    buf = io.BytesIO()
    payload = {"epoch": np.int64(40), "name": "biotrove-clip-o", "state_dict": sd}
    torch.save({**payload, "optimizer": optimizer}, buf)
    return buf.getvalue()
