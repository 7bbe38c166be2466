"""Start and stop a real console (the same `python app.py` a user runs) for benchmarks and tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# `make test` installs chromium and sets TRAINDECK_REQUIRE_BROWSER, as does CI=true: there a
# missing browser fails the run. A bare pytest without chromium skips the browser tests.
BROWSER_REQUIRED = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                       for v in ("CI", "TRAINDECK_REQUIRE_BROWSER"))
# Root needs no sandbox; the closed network needs chromium to call nowhere on its own.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@contextmanager
def browser_page(url: str, viewport: dict[str, int] | None = None):
    """A page of Debian's chromium (driven by Playwright) open at `url`, closed afterwards."""
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=viewport or {"width": 1400, "height": 1600})
            page.set_default_timeout(30000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_console(workspace: Path, *extra: str, env: dict[str, str] | None = None,
                  log_dir: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    workspace.mkdir(parents=True, exist_ok=True)
    log = open((log_dir or workspace.parent) / f"console-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workspace",
                                str(workspace), *extra], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    process.log_path = log.name
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"console exited with code {process.returncode}: "
                               f"{Path(log.name).read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("console did not start in 120 s")


def stop_console(process: subprocess.Popen) -> None:
    """Stop the console and the trainers it started: trainers outlive a console by design,
    but a benchmark or test must not leave one running behind it."""
    try:
        # Recursive: a warm-started trainer is forked by the spare, the console's grandchild.
        trainers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        trainers = []
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
    for trainer in trainers:
        try:
            if os.getpgid(trainer.pid) == trainer.pid:  # a trainer leads its own process group
                os.killpg(trainer.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_warm(client, timeout: float = 180) -> None:
    """Until the console's spare trainer has imported its libraries (/health says ready)."""
    deadline = time.time() + timeout
    while client.predict(api_name="/health")["warm_start"]["state"] != "ready":
        if time.time() > deadline:
            raise RuntimeError(f"the spare trainer was not ready within {timeout:.0f} s")
        time.sleep(1)


class HTTPCaller:
    """Gradio's documented HTTP protocol: start a call, then read its event stream."""

    def __init__(self, url: str):
        self.base = url.rstrip("/") + "/gradio_api/call"
        self.http = httpx.Client(timeout=60)
        # One session for all calls, as a browser tab or gradio_client has: without it the
        # server builds (and keeps) a new session state per call.
        self.session = uuid.uuid4().hex

    def predict(self, *args, api_name: str):
        name = api_name.strip("/")
        body = {"data": list(args), "session_hash": self.session}
        event = self.http.post(f"{self.base}/{name}", json=body).json()["event_id"]
        text = self.http.get(f"{self.base}/{name}/{event}").text
        lines = text.strip().splitlines()
        if "event: error" in text:
            raise RuntimeError(text)
        return json.loads(lines[-1].removeprefix("data:").strip())[0]
