"""Headless Debian chromium driven over the DevTools protocol: open a page with an Authorization header (the
MLflow UI refuses credentials inside the URL), wait until given text has rendered, save a screenshot."""

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.ops.servers import HOST, free_port

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws: Any) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return result["result"].get("value", "")


def screenshot(url: str, out: Path, headers: dict[str, str], wait_for: list[str], script: str | None = None,
               size: tuple[int, int] = (1600, 1300), timeout: float = 120.0) -> str:
    """Opens `url`, waits until every string in `wait_for` is on the page, runs `script` (JavaScript, e.g. to
    arrange the page), saves a PNG; returns the page text."""
    from websockets.sync.client import connect

    chromium = chromium_path()
    assert chromium, "chromium not installed"
    port = free_port()
    # Chromium's helper processes may still be flushing into the profile as the directory is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium, *FLAGS, f"--remote-debugging-port={port}",
                                 f"--remote-debugging-address={HOST}", f"--user-data-dir={profile}",
                                 f"--window-size={size[0]},{size[1]}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            target = _page_target(port)
            with connect(target, max_size=None, open_timeout=30) as ws:
                page = Page(ws)
                page.call("Network.enable")
                page.call("Network.setExtraHTTPHeaders", headers=headers)
                page.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                          deviceScaleFactor=1, mobile=False)
                page.call("Page.navigate", url=url)
                deadline, text = time.monotonic() + timeout, ""
                while time.monotonic() < deadline:
                    text = page.text()
                    if all(w in text for w in wait_for):
                        break
                    time.sleep(1)
                if script:
                    page.call("Runtime.evaluate", expression=script, returnByValue=True, awaitPromise=True)
                time.sleep(2)  # let the page settle (charts animate in)
                shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(shot["data"]))
                return page.text()
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Ends chromium with its renderer and GPU helpers (its own session), so nothing writes into the profile."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    deadline = time.monotonic() + 10  # the helpers outlive the main process by a moment
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _page_target(port: int, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("chromium's DevTools endpoint did not come up")
