"""Does the console stay fast with a big job history and a long run?

Builds a workspace holding 1,000 finished jobs, one of which logged 100,000 steps, starts the
console on it and calls `/list_jobs`, `/get_job` and `/get_metrics` (following the long run's tail
with since_step) --calls times each through the HTTP API, then times the job view's refresh
(the handler the browser's timer calls: job, analytics, the four charts, serialised as Gradio sends
them) in-process. Then it trains a real job with a metrics record every step and reports the CPU
the console's scheduler thread (which supervises and tails trainers) used meanwhile.
Targets: p95 under 200 ms for each call, chart payload bounded, scheduler under 2% of a core.

    python bench/scale.py [--jobs 1000] [--steps 100000] [--calls 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.console.engine import Engine  # noqa: E402
from engine.console.records.job import Job  # noqa: E402
from engine.console.records.workspace import Workspace  # noqa: E402
from engine.machine import detect  # noqa: E402
from engine.presets import PresetLibrary  # noqa: E402
from engine.resolve import resolve  # noqa: E402
from tests.harness import HTTPCaller, start_console, stop_console  # noqa: E402

STATUSES = ["completed"] * 6 + ["failed", "cancelled", "paused"]


def metrics_record(step: int, started: float) -> dict:
    return {"step": step, "time": started + step * 0.05, "epoch": step / 1000,
            "loss": 2.5 * math.exp(-step / 30000) + 0.3 + random.random() * 0.1,
            "grad_norm": 1 + random.random(), "learning_rate": 2e-4 * (1 - step / 100001),
            "samples_per_s": 160 + random.random() * 10, "tokens_per_s": 40000 + random.random() * 500,
            "tokens_seen": step * 2000, "gpu_mem_allocated_mb": 20000.0, "gpu_mem_peak_mb": 21000.0,
            "gpu_util_percent": 97.0, "gpu_temp_c": 61.0, "gpu_power_w": 540.0}


def build_workspace(root: Path, jobs: int, steps: int) -> str:
    """Write the job database and the long run's files directly, as years of use would leave them."""
    workspace = Workspace(root)
    workspace.create()
    config = resolve({}, PresetLibrary(), detect()).config
    started = time.time() - 86400 * 30
    documents, long_run = {}, ""
    for n in range(1, jobs + 1):
        at = started + n * 600
        job = Job(job_id=f"20261001-{n:06d}-scal", name=f"run {n}", config=config, seq=n,
                  status=random.choice(STATUSES), created_at=at, queued_at=at, started_at=at + 5,
                  finished_at=at + 300, attempt=1, progress={"step": 100, "total_steps": 100,
                                                             "loss": 0.5})
        if n == jobs:
            job.status, job.progress = "completed", {"step": steps, "total_steps": steps, "loss": 0.35}
            job.finished_at = at + steps * 0.05
            long_run = job.job_id
        documents[str(n)] = job.to_dict()
    workspace.database.write_text(json.dumps({"jobs": documents}))
    paths = workspace.job_paths(long_run)
    paths.root.mkdir(parents=True)
    with open(paths.metrics, "w") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps(metrics_record(step, started)) + "\n")
    return long_run


def timed(call, count: int) -> list[float]:
    call()  # the first call may read the run's metrics file once; later ones follow its tail
    times = []
    for _ in range(count):
        begin = time.perf_counter()
        call()
        times.append((time.perf_counter() - begin) * 1000)
    return times


def report(name: str, times: list[float], extra: str = "") -> None:
    p95 = statistics.quantiles(times, n=20)[-1]
    print(f"  {name:<34} median {statistics.median(times):6.1f} ms, p95 {p95:6.1f} ms "
          f"({'ok' if p95 < 200 else 'over 200 ms'}){extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--train-steps", type=int, default=600)
    args = parser.parse_args()
    random.seed(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    root = folder / "workspace"
    long_run = build_workspace(root, args.jobs, args.steps)
    size = Workspace(root).job_paths(long_run).metrics.stat().st_size
    print(f"machine: {os.cpu_count()} CPUs; {args.jobs} jobs "
          f"({Workspace(root).database.stat().st_size / 2**20:.1f} MB database), "
          f"one run of {args.steps} logged steps ({size / 2**20:.1f} MB metrics.jsonl)")

    print("through the HTTP API of a running console:")
    process, url = start_console(root)
    try:
        client = HTTPCaller(url)
        jobs = client.predict("", api_name="/list_jobs")
        report("/list_jobs", timed(lambda: client.predict("", api_name="/list_jobs"), args.calls),
               f", {len(jobs)} jobs")
        report("/get_job", timed(lambda: client.predict(long_run, api_name="/get_job"), args.calls))
        tail = args.steps - 10
        got = client.predict(long_run, tail, api_name="/get_metrics")
        report(f"/get_metrics since_step={tail}",
               timed(lambda: client.predict(long_run, tail, api_name="/get_metrics"), args.calls),
               f", {len(got)} records")
        full = timed(lambda: client.predict(long_run, 0, api_name="/get_metrics"), 5)
        print(f"  (for scale: /get_metrics since_step=0, all {args.steps} records: "
              f"median {statistics.median(full):.0f} ms)")

        health = client.predict(api_name="/health")
        job_id = client.predict({"max_steps": args.train_steps, "save_steps": 100000,
                                 "logging_steps": 1}, api_name="/submit_job")["job_id"]
        while client.predict(job_id, api_name="/get_job")["status"] == "queued":
            time.sleep(0.5)
        begin_cpu, begin = health["scheduler_cpu_s"], time.time()
        while client.predict(job_id, api_name="/get_job")["status"] == "running":
            time.sleep(2)
        wall = time.time() - begin
        used = client.predict(api_name="/health")["scheduler_cpu_s"] - begin_cpu
        records = client.predict(job_id, 0, api_name="/get_metrics")
        print(f"supervising a real run ({len(records)} records in {wall:.1f} s, "
              f"{len(records) / wall:.0f} records/s): scheduler thread {used:.2f} CPU s = "
              f"{used / wall * 100:.2f}% of a core (target < 2%)")
    finally:
        stop_console(process)

    print("the job view's refresh, in-process (handler plus the JSON Gradio sends):")
    from ui.jobs import job_view  # noqa: E402  (imports gradio: only here)
    engine = Engine(root).open()
    try:
        payload = [0]

        def refresh() -> None:
            outputs = job_view(engine, long_run, -1)  # -1: a browser that has drawn nothing yet
            payload[0] = sum(len(o.to_json()) for o in outputs if hasattr(o, "to_json"))

        report("chart refresh (all four charts)", timed(refresh, max(10, args.calls // 5)),
               f", payload {payload[0] / 1024:.0f} KiB")
    finally:
        engine.close()


if __name__ == "__main__":
    main()
