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

import os
import statistics
import sys
import threading
import time
from pathlib import Path

from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    alternate,
    command_line,
    running_console,
    samples_per_s,
    scratch,
    submit,
    wait_completed,
    wait_while,
)
from tests.harness import HTTPCaller  # noqa: E402


def poller(url: str, job_id: str, stop: threading.Event, calls: list,
           use_gradio_client: bool) -> None:
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
    job_id = submit(control, steps, name=name)
    wait_while(control, job_id, ("queued",), poll_s=0.2)
    return job_id


def wait_and_measure(control: Client, job_id: str) -> float:
    """Wait for the job to end; its steady-state samples/s (it must have completed)."""
    wait_completed(control, job_id)
    # The default job: batch 8, no accumulation.
    return samples_per_s(control.predict(job_id, 0, api_name="/get_metrics"), 8)


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
            "call_p50_ms": 1000 * statistics.median(calls) if calls else float("nan")}


def main() -> None:
    parser = command_line(__doc__, pairs=3, clients=20, steps=400)
    parser.add_argument("--gradio-client", action="store_true",
                        help="poll with gradio_client instead of plain HTTP")
    args = parser.parse_args()
    with running_console(scratch("polling") / "workspace") as console:
        # The clients stand for teammates' machines: here they must share the box, so they run
        # at the lowest priority and what is measured is the console's cost, not theirs.
        os.nice(19)
        quiet, polled = alternate(
            args.pairs, lambda: run_job(console.url, args.steps, 0),
            lambda: run_job(console.url, args.steps, args.clients, args.gradio_client),
            lambda a, b: f"quiet {a['samples_per_s']:.1f} samples/s, {args.clients} clients "
                         f"{b['samples_per_s']:.1f} samples/s ({b['calls']} polls, median "
                         f"{b['call_p50_ms']:.0f} ms)")
    print(f"machine: {os.cpu_count()} CPUs; median quiet {quiet:.1f}, "
          f"median polled {polled:.1f} samples/s")
    print(f"ratio polled/quiet: {polled / quiet:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
