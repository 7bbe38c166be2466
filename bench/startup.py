"""Time to the first step: a job submitted to a console with warm start, to one without (a
fresh `python -m engine.train` per job), and a plain TRL script from its process start.

Two consoles run side by side (idle between jobs); each round runs, in turn, the plain script,
a job on the warm console and a job on the cold one, all of --steps steps of the default job.
The consoles' first job (which fills the tokenized-dataset cache, as any earlier run of the
same data has) is left out. Target: submit to first step at most 2 s with warm start.

    python bench/startup.py [--rounds 3] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.overhead import run_plain  # noqa: E402
from tests.harness import HTTPCaller, start_console, stop_console, wait_warm  # noqa: E402


def first_step_after_submit(client: HTTPCaller, steps: int) -> float:
    submitted = time.time()
    job_id = client.predict({"max_steps": steps, "save_steps": 100000},
                            api_name="/submit_job")["job_id"]
    while client.predict(job_id, api_name="/get_job")["status"] in ("queued", "running"):
        time.sleep(0.5)
    job = client.predict(job_id, api_name="/get_job")
    assert job["status"] == "completed", job["error"]
    return client.predict(job_id, 0, api_name="/get_metrics")[0]["time"] - submitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    warm_process, warm_url = start_console(folder / "warm")
    cold_process, cold_url = start_console(folder / "cold", "--no-warm-start")
    try:
        warm, cold = HTTPCaller(warm_url), HTTPCaller(cold_url)
        wait_warm(warm)
        first_step_after_submit(warm, 2)
        first_step_after_submit(cold, 2)
        results = {"plain": [], "warm": [], "cold": []}
        for round_ in range(args.rounds):
            wait_warm(warm)  # the spare is back before the next job, as between real jobs
            results["plain"].append(run_plain(args.steps, folder)[1])
            results["warm"].append(first_step_after_submit(warm, args.steps))
            results["cold"].append(first_step_after_submit(cold, args.steps))
            print(f"round {round_ + 1}: plain script {results['plain'][-1]:.2f} s, "
                  f"warm start {results['warm'][-1]:.2f} s, "
                  f"cold start {results['cold'][-1]:.2f} s", flush=True)
        median = {k: statistics.median(v) for k, v in results.items()}
        print(f"machine: {os.cpu_count()} CPUs" +
              (", GPU" if os.path.exists("/dev/nvidia0") else ", no GPU"))
        print(f"time to first step (median): plain script {median['plain']:.2f} s from process "
              f"start; console {median['warm']:.2f} s from submit with warm start "
              f"(target <= 2 s: {'met' if median['warm'] <= 2 else 'NOT met'}), "
              f"{median['cold']:.2f} s without")
    finally:
        stop_console(warm_process)
        stop_console(cold_process)


if __name__ == "__main__":
    main()
