"""How soon does a logged step reach an API client?

Trains a real job on a running console (a metrics record every step) while a client follows it
with `/get_metrics` since the last step it has, every --interval seconds. For every record the
latency is the time the client got it minus the time the trainer wrote it (the record's `time`;
same machine, same clock). Target: median under 1 s.

    python bench/latency.py [--steps 400] [--interval 0.2]
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
from tests.harness import HTTPCaller, start_console, stop_console  # noqa: E402


def follow(client: HTTPCaller, job_id: str, interval: float) -> list[float]:
    latencies, last = [], 0
    while True:
        status = client.predict(job_id, api_name="/get_job")["status"]
        for record in client.predict(job_id, last, api_name="/get_metrics"):
            latencies.append(time.time() - record["time"])
            last = record["step"]
        if status not in ("queued", "running"):
            return latencies
        time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    process, url = start_console(folder / "workspace")
    try:
        client = HTTPCaller(url)
        for interval in (args.interval, 1.0):
            job_id = client.predict({"max_steps": args.steps, "save_steps": 100000, "logging_steps": 1},
                                    api_name="/submit_job")["job_id"]
            latencies = follow(client, job_id, interval)
            p95 = statistics.quantiles(latencies, n=20)[-1]
            print(f"polling every {interval:.1f} s: {len(latencies)} records, latency median "
                  f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms", flush=True)
        print(f"machine: {os.cpu_count()} CPUs; target: median under 1 s")
    finally:
        stop_console(process)


if __name__ == "__main__":
    main()
