"""Does the console stay fast with a big job history and a long run?

Builds a workspace holding 1,000 finished jobs, one of which logged 100,000 steps, starts the
console on it and calls `/list_jobs`, `/get_job` and `/get_metrics` (following the long run's tail
with since_step) --calls times each through the HTTP API. Then it trains a real job with a metrics
record every step and reports the CPU the console's scheduler thread (which supervises and tails
trainers) used meanwhile. Last, in-process, it times the job view's handler (what a browser tab's
stream sends on a new step: job, analytics, the charts as plotly JSON) with the charts drawn anew
and with them already drawn by another tab.
Targets: p95 under 200 ms for each call, chart payload bounded, scheduler under 2% of a core.

    python bench/scale.py [--jobs 1000] [--steps 100000] [--calls 100] [--train-steps 600]
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    command_line,
    running_console,
    scratch,
    submit,
    wait_while,
)
from engine.console.engine import Engine  # noqa: E402
from engine.console.records.job import Job  # noqa: E402
from engine.console.records.workspace import Workspace  # noqa: E402
from engine.machine import detect  # noqa: E402
from engine.presets import PresetLibrary  # noqa: E402
from engine.resolve import resolve  # noqa: E402
from tests.harness import HTTPCaller  # noqa: E402

STATUSES = ["completed"] * 6 + ["failed", "cancelled", "paused"]


def metrics_record(step: int, started: float) -> dict:
    return {"step": step, "time": started + step * 0.05, "epoch": step / 1000,
            "loss": 2.5 * math.exp(-step / 30000) + 0.3 + random.random() * 0.1,
            "grad_norm": 1 + random.random(), "learning_rate": 2e-4 * (1 - step / 100001),
            "samples_per_s": 160 + random.random() * 10,
            "tokens_per_s": 40000 + random.random() * 500, "tokens_seen": step * 2000,
            "gpu_mem_allocated_mb": 20000.0, "gpu_mem_peak_mb": 21000.0,
            "gpu_util_percent": 97.0, "gpu_temp_c": 61.0, "gpu_power_w": 540.0}


def build_workspace(root: Path, jobs: int, steps: int) -> str:
    """Write the job database and the long run's files directly, as years of use leave them."""
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
            job.status = "completed"
            job.progress = {"step": steps, "total_steps": steps, "loss": 0.35}
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
    p95 = statistics.quantiles(times, n=20, method="inclusive")[-1]
    print(f"  {name:<34} median {statistics.median(times):6.1f} ms, p95 {p95:6.1f} ms "
          f"({'ok' if p95 < 200 else 'over 200 ms'}){extra}", flush=True)


def time_api(client: HTTPCaller, long_run: str, steps: int, calls: int) -> None:
    jobs = client.predict("", api_name="/list_jobs")
    report("/list_jobs", timed(lambda: client.predict("", api_name="/list_jobs"), calls),
           f", {len(jobs)} jobs")
    report("/get_job", timed(lambda: client.predict(long_run, api_name="/get_job"), calls))
    tail = max(0, steps - 10)
    got = client.predict(long_run, tail, api_name="/get_metrics")
    report(f"/get_metrics since_step={tail}",
           timed(lambda: client.predict(long_run, tail, api_name="/get_metrics"), calls),
           f", {len(got)} records")
    full = timed(lambda: client.predict(long_run, 0, api_name="/get_metrics"), 5)
    print(f"  (for scale: /get_metrics since_step=0, all {steps} records: "
          f"median {statistics.median(full):.0f} ms)")


def time_supervision(client: HTTPCaller, train_steps: int) -> None:
    """The scheduler thread's CPU while it supervises a run logging every step."""
    health = client.predict(api_name="/health")
    job_id = submit(client, train_steps, logging_steps=1)
    wait_while(client, job_id, ("queued",))
    begin_cpu, begin = health["scheduler_cpu_s"], time.time()
    wait_while(client, job_id, ("running",), poll_s=2)
    wall = time.time() - begin
    used = client.predict(api_name="/health")["scheduler_cpu_s"] - begin_cpu
    records = client.predict(job_id, 0, api_name="/get_metrics")
    print(f"supervising a real run ({len(records)} records in {wall:.1f} s, "
          f"{len(records) / wall:.0f} records/s): scheduler thread {used:.2f} CPU s = "
          f"{used / wall * 100:.2f}% of a core (target < 2%)")


def chart_bytes(update: dict, charts: list[str]) -> int:
    """The size of the charts' plotly JSON in one job view update (what Gradio sends)."""
    size = 0
    for chart in charts:
        value = update.get(chart)
        value = value.get("value") if isinstance(value, dict) else value
        size += len(value.model_dump_json()) if hasattr(value, "model_dump_json") else 0
    return size


def time_job_view(root: Path, long_run: str, calls: int) -> None:
    """The job view's handler (job, analytics, the charts) for a browser that has drawn nothing
    yet: once with the charts drawn anew (the first tab on a new step), once with the drawing
    another tab of the same run already made."""
    from ui import jobs  # imports gradio: only here

    # The handler uses the view's components only as keys of its update: names stand in.
    view = jobs.JobView(**{field.name: field.name for field in fields(jobs.JobView)})
    engine = Engine(root).open()
    try:
        user, payload = engine.users.get(None), [0]

        def show(fresh: bool) -> None:
            if fresh:
                jobs.CHARTS = jobs.DrawnCharts()
            update = jobs.job_view(engine, view, long_run, "", user)
            payload[0] = chart_bytes(update, view.charts())

        count = max(10, calls // 5)
        report("job view, charts drawn anew", timed(lambda: show(True), count),
               f", charts {payload[0] / 1024:.0f} KiB")
        report("job view, charts already drawn", timed(lambda: show(False), count))
    finally:
        engine.close()


def main() -> None:
    parser = command_line(__doc__, jobs=1000, steps=100000, calls=100, train_steps=600)
    args = parser.parse_args()
    random.seed(0)
    root = scratch("scale") / "workspace"
    long_run = build_workspace(root, args.jobs, args.steps)
    size = Workspace(root).job_paths(long_run).metrics.stat().st_size
    print(f"machine: {os.cpu_count()} CPUs; {args.jobs} jobs "
          f"({Workspace(root).database.stat().st_size / 2**20:.1f} MB database), "
          f"one run of {args.steps} logged steps ({size / 2**20:.1f} MB metrics.jsonl)")
    print("through the HTTP API of a running console:")
    with running_console(root) as console:
        time_api(console.client, long_run, args.steps, args.calls)
        time_supervision(console.client, args.train_steps)
    print("the job view, in-process (handler plus the charts' JSON Gradio sends):")
    time_job_view(root, long_run, args.calls)


if __name__ == "__main__":
    main()
