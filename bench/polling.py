"""Does a crowd of API clients slow training down?

Runs the same job through one console, alternating quiet (A) and with N clients each polling
/get_job and /get_metrics once a second (B), for several A/B pairs, and reports the steady-state
samples/s of each run and the B/A ratio. Target: B/A >= 0.95 with 20 clients.

The pollers speak Gradio's HTTP API (POST /gradio_api/call/<name>, then read the result stream),
as curl or a browser would: gradio_client costs ~65 ms of client CPU per call, which on a small
machine would measure the clients, not the console. `--gradio-client` uses it anyway.

    python bench/polling.py [--pairs 3] [--clients 20] [--steps 400] [--gradio-client]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.console.metrics.analytics import steady_state  # noqa: E402
from tests.harness import HTTPCaller, start_console, stop_console  # noqa: E402


def poller(url: str, job_id: str, stop: threading.Event, calls: list, use_gradio_client: bool) -> None:
    client = Client(url, verbose=False) if use_gradio_client else HTTPCaller(url)
    since = 0
    while not stop.is_set():
        started = time.time()
        client.predict(job_id, api_name="/get_job")
        new = client.predict(job_id, since, api_name="/get_metrics")
        if new:
            since = new[-1]["step"]
        calls.append(time.time() - started)
        stop.wait(max(0.0, 1.0 - (time.time() - started)))


def start_running(control: Client, steps: int, name: str) -> str:
    """Submit the default job for `steps` steps; its id, once it runs."""
    job_id = control.predict({"max_steps": steps, "save_steps": 100000, "name": name},
                             api_name="/submit_job")["job_id"]
    while control.predict(job_id, api_name="/get_job")["status"] == "queued":
        time.sleep(0.2)
    return job_id


def wait_and_measure(control: Client, job_id: str) -> float:
    """Wait for the job to end; its steady-state samples/s (it must have completed)."""
    while control.predict(job_id, api_name="/get_job")["status"] == "running":
        time.sleep(0.5)
    job = control.predict(job_id, api_name="/get_job")
    assert job["status"] == "completed", job["error"]
    records = steady_state(control.predict(job_id, 0, api_name="/get_metrics"))
    span = records[-1]["time"] - records[0]["time"]
    return (records[-1]["step"] - records[0]["step"]) * 8 / span  # batch 8, accumulation 1


def run_job(url: str, steps: int, clients: int, use_gradio_client: bool = False) -> dict:
    control = Client(url, verbose=False)
    job_id = start_running(control, steps, f"poll-{clients}")
    stop, calls = threading.Event(), []
    threads = [threading.Thread(target=poller, args=(url, job_id, stop, calls, use_gradio_client),
                                daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    samples_per_s = wait_and_measure(control, job_id)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    return {"samples_per_s": samples_per_s, "calls": len(calls),
            "call_p50_ms": 1000 * statistics.median(calls) if calls else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--gradio-client", action="store_true",
                        help="poll with gradio_client instead of plain HTTP")
    args = parser.parse_args()
    workspace = Path(tempfile.mkdtemp(prefix="bench-polling-")) / "workspace"
    process, url = start_console(workspace)
    # The clients stand for teammates' machines: here they must share the box, so they run at
    # the lowest priority and what is measured is the console's cost, not theirs.
    os.nice(19)
    try:
        quiet, polled = [], []
        for pair in range(args.pairs):
            a = run_job(url, args.steps, 0)
            b = run_job(url, args.steps, args.clients, args.gradio_client)
            quiet.append(a["samples_per_s"])
            polled.append(b["samples_per_s"])
            print(f"pair {pair + 1}: quiet {a['samples_per_s']:.1f} samples/s, "
                  f"{args.clients} clients {b['samples_per_s']:.1f} samples/s "
                  f"({b['calls']} polls, median {b['call_p50_ms']:.0f} ms)", flush=True)
        ratio = statistics.median(polled) / statistics.median(quiet)
        print(f"machine: {os.cpu_count()} CPUs; median quiet {statistics.median(quiet):.1f}, "
              f"median polled {statistics.median(polled):.1f} samples/s")
        print(f"ratio polled/quiet: {ratio:.3f} (target >= 0.95)")
    finally:
        stop_console(process)


if __name__ == "__main__":
    main()
