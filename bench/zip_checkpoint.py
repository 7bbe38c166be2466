"""Zipping a large checkpoint must not grow the console's memory or stall its other endpoints.

Trains a tiny job through a real console, plants a generated weights file of --size-mb in its
checkpoint, then downloads the checkpoint through /download_model while sampling the console's
RSS every 20 ms and timing /health and /get_job calls made at the same time.
Targets: RSS growth < 100 MB; every concurrent call answered within 200 ms.

    python bench/zip_checkpoint.py [--size-mb 1024]
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
from gradio_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    Console,
    command_line,
    running_console,
    scratch,
    submit,
    wait_completed,
)
from tests.harness import HTTPCaller  # noqa: E402


def plant_weights(path: Path, size_mb: int) -> None:
    block = os.urandom(1 << 20)  # random bytes: nothing for a compressor to win
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(block)


def main() -> None:
    args = command_line(__doc__, size_mb=1024).parse_args()
    with running_console(scratch("zip") / "workspace") as console:
        client = Client(console.url, verbose=False)
        job_id = submit(client, 2, save_steps=2)
        wait_completed(client, job_id)
        checkpoint = console.workspace / "jobs" / job_id / "checkpoint-2"
        plant_weights(checkpoint / "planted.safetensors", args.size_mb)
        print(f"machine: {os.cpu_count()} CPUs; checkpoint with a {args.size_mb} MB weights file")
        measure_download(console, client, job_id)


def measure_download(console: Console, client: Client, job_id: str) -> None:
    """Download checkpoint-2 while sampling the console's RSS and timing concurrent calls."""
    process = psutil.Process(console.process.pid)
    baseline = process.memory_info().rss
    peak = baseline
    latencies: list[float] = []
    done = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    def probe() -> None:
        prober = HTTPCaller(console.url)  # plain HTTP: gradio_client's CPU would blur the timing
        while not done.is_set():
            for name, call_args in (("/health", ()), ("/get_job", (job_id,))):
                started = time.perf_counter()
                prober.predict(*call_args, api_name=name)
                latencies.append(time.perf_counter() - started)
            time.sleep(0.05)

    threads = [threading.Thread(target=sample_rss, daemon=True),
               threading.Thread(target=probe, daemon=True)]
    for thread in threads:
        thread.start()
    started = time.time()
    zipped = client.predict(job_id, "checkpoint-2", api_name="/download_model")
    wall = time.time() - started
    done.set()
    for thread in threads:
        thread.join(timeout=10)
    size = Path(zipped).stat().st_size / 2**20
    print(f"download_model: {wall:.1f} s wall, zip {size:.0f} MB (zip written and sent)")
    print(f"console RSS: baseline {baseline / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, "
          f"growth {(peak - baseline) / 2**20:.1f} MB (target < 100)")
    report_latencies(sorted(latencies))


def report_latencies(latencies: list[float]) -> None:
    if latencies:
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(f"concurrent /health and /get_job: {len(latencies)} calls, median "
              f"{1000 * statistics.median(latencies):.0f} ms, p95 {1000 * p95:.0f} ms, "
              f"max {1000 * latencies[-1]:.0f} ms (target: all < 200)")


if __name__ == "__main__":
    main()
