"""Do open browser tabs on a running job slow it down?

Runs the same job through one console, alternating with no tab open (A) and with N tabs showing
the job view (B), for several A/B pairs, and reports the steady-state samples/s of each run, the
B/A ratio, the console process's CPU time in each, and how many updates the tabs received.
Target: B/A >= 0.95 with 20 tabs.

Each tab speaks the browser's protocol, not a rendering browser (twenty chromium tabs would
measure chromium on this machine, not the console): it joins the job view's stream once, as
selecting a row does, and reads the updates pushed on its event stream.

    python bench/live_views.py [--pairs 3] [--tabs 20] [--steps 400]
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from pathlib import Path

import httpx
import psutil
from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import alternate, command_line, running_console, scratch  # noqa: E402
from bench.polling import start_running, wait_and_measure  # noqa: E402


def job_view_stream(url: str) -> int:
    """The id of the job view's stream in the console's page config."""
    config = httpx.get(f"{url.rstrip('/')}/config", timeout=30).json()
    for dependency in config["dependencies"]:
        if dependency.get("trigger_mode") == "multiple" and len(dependency["inputs"]) == 3:
            return dependency["id"]
    raise RuntimeError("no job view stream in the console's config")


def tab(url: str, fn_index: int, job_id: str, stop: threading.Event, updates: list) -> None:
    """One browser tab on the job view: join the stream, then read what it pushes."""
    base, session = url.rstrip("/") + "/gradio_api", uuid.uuid4().hex
    try:
        read_stream(base, session, fn_index, job_id, stop, updates)
    except httpx.HTTPError:
        pass  # the console stopped first


def read_stream(base: str, session: str, fn_index: int, job_id: str, stop: threading.Event,
                updates: list) -> None:
    with httpx.Client(timeout=None) as http:
        http.post(f"{base}/queue/join", json={"data": [job_id, "", 1], "fn_index": fn_index,
                                              "session_hash": session, "event_data": None,
                                              "trigger_id": None})
        with http.stream("GET", f"{base}/queue/data", params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data:") and '"process_generating"' in line:
                    updates.append(json.loads(line[5:]).get("msg"))


def run_job(url: str, steps: int, tabs: int, fn_index: int, console: psutil.Process) -> dict:
    control = Client(url, verbose=False)
    job_id = start_running(control, steps, f"tabs-{tabs}")
    stop, updates = threading.Event(), []
    threads = [threading.Thread(target=tab, args=(url, fn_index, job_id, stop, updates),
                                daemon=True) for _ in range(tabs)]
    cpu_before = console.cpu_times()
    for thread in threads:
        thread.start()
    samples_per_s = wait_and_measure(control, job_id)
    cpu_after = console.cpu_times()
    stop.set()
    console_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {"samples_per_s": samples_per_s, "updates": len(updates), "console_cpu_s": console_cpu}


def main() -> None:
    args = command_line(__doc__, pairs=3, tabs=20, steps=400).parse_args()
    # Each tab is one account's view in practice; here one account opens them all.
    with running_console(scratch("live") / "workspace",
                         env={"TRAINDECK_LIVE_VIEWS_PER_USER": str(args.tabs)}) as running:
        url, console = running.url, psutil.Process(running.process.pid)
        fn_index = job_view_stream(url)
        os.nice(19)  # the tabs stand for other machines: what is measured is the console's cost
        quiet, watched = alternate(
            args.pairs, lambda: run_job(url, args.steps, 0, fn_index, console),
            lambda: run_job(url, args.steps, args.tabs, fn_index, console),
            lambda a, b: f"no tab {a['samples_per_s']:.1f} samples/s (console CPU "
                         f"{a['console_cpu_s']:.2f} s), {args.tabs} tabs "
                         f"{b['samples_per_s']:.1f} samples/s (console CPU "
                         f"{b['console_cpu_s']:.2f} s, {b['updates']} updates pushed)")
    print(f"machine: {os.cpu_count()} CPUs; median no tab {quiet:.1f}, "
          f"median {args.tabs} tabs {watched:.1f} samples/s")
    print(f"ratio {args.tabs} tabs / no tab: {watched / quiet:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
