"""Headless Chromium for tests and benchmarks, driven over the DevTools protocol on a pipe.

``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and write replies on fd 4, as
NUL-separated JSON: no websocket, no port, no Python package to install, only the browser
(Debian's ``chromium``). The network is off three times over: host names resolve to nothing,
every request goes to a dead proxy, and the page runs with the DevTools network emulation
offline; every request the page makes is recorded for the test to check.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium executable: $BIOTROVE_CHROMIUM, else the first of CANDIDATES on PATH."""
    env = os.environ.get("BIOTROVE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _die_with_parent() -> None:
    """Linux: the browser is killed when the test process dies, however it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser process; use as a context manager."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="biotrove-chromium-")
        to_child, self._w = os.pipe()  # our commands -> the browser's fd 3
        self._r, from_child = os.pipe()  # the browser's fd 4 -> our replies

        def fds() -> None:  # in the child, before exec: the pipes become fds 3 and 4
            a, b = os.dup(to_child), os.dup(from_child)
            os.dup2(a, 3)
            os.dup2(b, 4)
            _die_with_parent()

        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # CI containers run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--proxy-server=http://127.0.0.1:9",
                "--hide-scrollbars",
                "--force-color-profile=srgb",
                "about:blank",
            ],
            preexec_fn=fds,
            pass_fds=(3, 4),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    # -- the protocol ------------------------------------------------------------------------
    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command and wait for its reply; returns its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._next(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("the browser did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser exited ({self.proc.poll()})")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._next(deadline))
        except BrowserError:
            if self.proc.poll() is not None:
                raise

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.call(f"{domain}.enable")
        page.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        page.viewport(width, height)
        return page

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self._id += 1
                os.write(self._w, json.dumps({"id": self._id, "method": "Browser.close"}).encode())
                os.write(self._w, b"\0")
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            for fd in (self._w, self._r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Page:
    """A tab of the browser."""

    def __init__(self, browser: Chromium, session: str):
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def events(self, method: str) -> list[dict]:
        return [
            e["params"]
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]

    def viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def goto(self, url: str, ready: str = "document.documentElement.dataset.ready === '1'") -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_for(ready)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.eval(f"!!({expression})"):
                    return
            except BrowserError:
                pass
            time.sleep(0.05)
        raise BrowserError(f"timed out waiting for {expression}")

    def screenshot(self, full_page: bool = False, max_height: int = 6000) -> bytes:
        """A PNG of the viewport, or of the page from its top (at most ``max_height`` px)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": min(size["height"], max_height),
                "scale": 1,
            }
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def requests(self) -> list[str]:
        """Every URL the page asked for."""
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def problems(self) -> list[str]:
        """Script errors, console errors and browser log errors (CSP refusals among them)."""
        out = [
            json.dumps(e.get("exceptionDetails", {}))[:500]
            for e in self.events("Runtime.exceptionThrown")
        ]
        out += [
            " ".join(str(a.get("value", a.get("description", ""))) for a in e.get("args", []))
            for e in self.events("Runtime.consoleAPICalled")
            if e.get("type") in ("error", "assert")
        ]
        out += [
            f"{e['entry'].get('source')}: {e['entry'].get('text')}"
            for e in self.events("Log.entryAdded")
            if e["entry"].get("level") == "error"
        ]
        return out
