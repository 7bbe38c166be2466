"""How soon does a logged step reach an API client?

Trains a real job on a running console (a metrics record every step) while a client follows it
with `/get_metrics` since the last step it has, every --interval seconds. For every record the
latency is the time the client got it minus the time the trainer wrote it (the record's `time`;
same machine, same clock). Target: median under 1 s.

    python bench/latency.py [--steps 400] [--interval 0.2]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import command_line, running_console, scratch, submit  # noqa: E402
from tests.harness import HTTPCaller  # noqa: E402


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
    args = command_line(__doc__, steps=400, interval=0.2).parse_args()
    with running_console(scratch("latency") / "workspace") as console:
        for interval in (args.interval, 1.0):
            job_id = submit(console.client, args.steps, logging_steps=1)
            latencies = follow(console.client, job_id, interval)
            p95 = statistics.quantiles(latencies, n=20, method="inclusive")[-1]
            print(f"polling every {interval:.1f} s: {len(latencies)} records, latency median "
                  f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms", flush=True)
    print(f"machine: {os.cpu_count()} CPUs; target: median under 1 s")


if __name__ == "__main__":
    main()
