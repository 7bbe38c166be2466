"""What the benches share: their command line, a console on a fresh workspace, waiting for a
job to end, the plain TRL reference run, and the machine line their reports start with."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import REPO, HTTPCaller, start_console, stop_console

# The exit code of a bench that needs a device this machine lacks (tests/test_benches.py
# accepts it, and only it, where there is no GPU).
NO_DEVICE_EXIT = 3


def command_line(doc: str, **defaults: Any) -> argparse.ArgumentParser:
    """The bench's parser, described by its docstring's first line, with an option per default
    (`pairs=3` gives `--pairs`, an int); add options of other kinds on the result."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return parser


def scratch(prefix: str) -> Path:
    """A fresh folder for one bench run (kept afterwards: its logs explain a bad number)."""
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


@dataclass
class Console:
    process: subprocess.Popen
    url: str
    workspace: Path
    client: HTTPCaller  # plain HTTP: gradio_client's own CPU would blur what is measured


@contextmanager
def running_console(workspace: Path, *extra: str,
                    env: dict[str, str] | None = None) -> Iterator[Console]:
    """`python app.py` on `workspace`, stopped with every trainer it started on the way out."""
    process, url = start_console(workspace, *extra, env=env)
    try:
        yield Console(process, url, workspace, HTTPCaller(url))
    finally:
        stop_console(process)


def submit(client, steps: int, **config: Any) -> str:
    """Submit the default job for `steps` steps (no checkpoints unless asked); its id."""
    return client.predict({"max_steps": steps, "save_steps": 100000, **config},
                          api_name="/submit_job")["job_id"]


def wait_while(client, job_id: str, statuses: tuple[str, ...], poll_s: float = 0.5) -> str:
    """Poll /get_job until the job's status leaves `statuses`; that status."""
    while (status := client.predict(job_id, api_name="/get_job")["status"]) in statuses:
        time.sleep(poll_s)
    return status


def wait_completed(client, job_id: str, poll_s: float = 0.5) -> dict[str, Any]:
    """Wait for the job to end; the job, which must have completed (a bench of a failed run
    would report nonsense)."""
    wait_while(client, job_id, ("queued", "running"), poll_s)
    job = client.predict(job_id, api_name="/get_job")
    if job["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    return job


def samples_per_s(records: list[dict[str, Any]], batch: int) -> float:
    """Samples/s over the steady part of a run: step count over wall time, warm-up skipped.
    Needs three records or more (one is always dropped as warm-up)."""
    from engine.console.metrics.analytics import steady_state

    steady = steady_state(records)
    return ((steady[-1]["step"] - steady[0]["step"]) * batch
            / (steady[-1]["time"] - steady[0]["time"]))


def alternate(pairs: int, run_a: Callable[[], dict[str, Any]],
              run_b: Callable[[], dict[str, Any]],
              describe: Callable[[dict[str, Any], dict[str, Any]], str]) -> tuple[float, float]:
    """A then B, `pairs` times (alternating spreads the machine's drift over both), printing
    "pair N: " + describe(a, b) after each pair; the median samples_per_s of A and of B."""
    a_rates, b_rates = [], []
    for pair in range(pairs):
        a, b = run_a(), run_b()
        a_rates.append(a["samples_per_s"])
        b_rates.append(b["samples_per_s"])
        print(f"pair {pair + 1}: {describe(a, b)}", flush=True)
    return statistics.median(a_rates), statistics.median(b_rates)


def plain_trl_command(out: Path, steps: int, *extra: str) -> list[str]:
    """The hand-written TRL script (bench/plain_trl.py) writing its step records to `out`."""
    return [sys.executable, "bench/plain_trl.py", str(out), "--steps", str(steps), *extra]


def run_plain_trl(out: Path, steps: int, *extra: str) -> list[dict[str, Any]]:
    """Run bench/plain_trl.py once; its lines: {"start": process start}, then one per step (and
    the peak GPU memory last, on a GPU). Its output goes to a log beside `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    with open(log, "wb") as sink:
        code = subprocess.run(plain_trl_command(out, steps, *extra), cwd=REPO, stdout=sink,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"bench/plain_trl.py exited {code}: {log.read_text()[-2000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0")


def machine_line() -> str:
    return f"machine: {os.cpu_count()} CPUs, {'GPU' if has_gpu() else 'no GPU'}"
