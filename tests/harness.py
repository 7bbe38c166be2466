"""What tests and benchmarks share: waits with deadlines, calls to a console's API (accepted or
refused), and starting and stopping a real console (the same `python app.py` a user runs)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
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


def wait_until(predicate, timeout: float, what: str | Callable[[], str],
               interval: float = 0.2):
    """Poll until `predicate()` returns something true (and return it); past the deadline, fail
    saying what was awaited (`what`, or what it returns then: the state it ended in)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            awaited = what() if callable(what) else what
            raise AssertionError(f"waited {timeout:g} s for {awaited}")
        time.sleep(interval)


# gradio_client makes two httpx clients for each call, and each would load the CA bundle anew:
# some 55 ms of CPU a call, most of a test's own CPU while it polls a job. One context for all.
TLS = ssl.create_default_context()


def console_client(url: str, **kwargs):
    """A gradio_client Client of a console, as a script makes one (`auth=...` and the rest)."""
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=TLS, **kwargs)


def call(client, api_name: str, *args, **kwargs):
    """An endpoint of a console, called as a script would (gradio_client)."""
    return client.predict(*args, api_name=api_name, **kwargs)


def refused(client, api_name: str, *args) -> str:
    """The message of the refusal that calling `api_name` must get; never an internal error."""
    from gradio_client.exceptions import AppError

    try:
        answer = call(client, api_name, *args)
    except AppError as error:
        message = str(error)
    else:
        raise AssertionError(f"{api_name} {args!r} was accepted ({answer!r}); a refusal expected")
    assert "internal error" not in message, (api_name, args, message)
    return message


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


# What marks the processes a test's console started (spares, trainers, their children, Slurm jobs
# it submits): its workspace. Each names it in its command line, has a file open in it (a log),
# or carries it in its environment (TRAINDECK_TEST_CONSOLE), whether its parent died or a later
# console on the workspace re-attached it. (A warm trainer's title is written over its
# environment: the first two find it.)
CONSOLE_TAG = "TRAINDECK_TEST_CONSOLE"
STOP_DEADLINE_S = 30.0


def start_console(workspace: Path, *extra: str, env: dict[str, str] | None = None,
                  log_dir: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    workspace.mkdir(parents=True, exist_ok=True)
    workspace = workspace.resolve()
    tag = str(workspace)
    log = open((log_dir or workspace.parent) / f"console-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--workspace",
                                str(workspace), *extra], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {}), CONSOLE_TAG: tag})
    process.log_path = log.name
    process.tag = tag
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: console_answers(process, url), 120, f"the console at {url} to answer")
    except BaseException:
        stop_console(process)
        raise
    return process, url


def console_answers(process: subprocess.Popen, url: str) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"console exited with code {process.returncode}: "
                           f"{Path(process.log_path).read_text()[-2000:]}")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def started_by(tag: str) -> list[psutil.Process]:
    """The live processes that a console on the workspace `tag` started (the console included),
    or, `tag` being any folder, that work in it. Never this process or what runs it (pytest
    under `timeout` or `time` carries --basetemp in its command line too)."""
    ours = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    return [process for process in psutil.process_iter()
            if process.pid not in ours and carries(process, tag)]


def carries(process: psutil.Process, tag: str) -> bool:
    # The folder itself or a path in it, not a sibling whose name it begins (workspace2).
    in_folder = re.compile(re.escape(tag) + r"(?![^/])")
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return (process.environ().get(CONSOLE_TAG) == tag
                or any(in_folder.search(part) for part in process.cmdline())
                or any(f.path.startswith(tag + os.sep) for f in process.open_files()))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_console(process: subprocess.Popen, deadline_s: float = STOP_DEADLINE_S) -> None:
    """Stop the console, then every process it started: spare trainers, trainers (which outlive
    a console by design, but not a test) and their children. Fails, naming them, when some are
    still alive past the deadline."""
    try:
        known = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        known = []
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

    def left() -> list[psutil.Process]:
        alive = [p for p in known if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return list({p.pid: p for p in alive + started_by(process.tag)}.values())

    def stopped() -> bool:
        leftovers = left()
        for leftover in leftovers:
            kill_with_group(leftover.pid)
        psutil.wait_procs(leftovers, timeout=2)
        return not leftovers

    wait_until(stopped, deadline_s, lambda: f"the processes of the console on {process.tag} to "
               f"end: {[(p.pid, p.cmdline()) for p in left()]}", interval=0.1)


def kill_with_group(pid: int) -> None:
    """SIGKILL a process and, when it leads its own process group (a trainer, a spare), the
    group: a trainer's helpers go with it."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def outliving(folder: Path, grace_s: float = 10.0) -> list[str]:
    """The processes still working in `folder` (`started_by`: a trainer whose job file is there,
    a console on a workspace there, a process with a file open there) `grace_s` on, each killed
    with its group and described. The suite's last check: nothing a test started outlives it."""
    tag = str(folder.resolve())
    deadline = time.monotonic() + grace_s
    while (left := started_by(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for process in left:
        try:
            described.append(f"pid {process.pid}: {' '.join(process.cmdline())[:300]}")
        except psutil.Error:
            continue
        kill_with_group(process.pid)
    return described


def wait_warm(client, timeout: float = 180) -> None:
    """Until the console's spare trainer has imported its libraries (/health says ready)."""
    wait_until(lambda: client.predict(api_name="/health")["warm_start"]["state"] == "ready",
               timeout, "the spare trainer to import its libraries (/health: ready)", interval=1)


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
