"""Every script under bench/ runs once with its smallest arguments, so a bench that stops running
(an engine or UI change under it) fails the full tier, not the day someone needs its numbers.

The scripts are found, not listed: a new bench without an entry in SMALLEST fails until it gets
one. Each runs as `python bench/NAME` would, two at a time, with a deadline; the test checks
the exit code and the result lines the bench promises (its numbers), not only the exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from bench.common import NO_DEVICE_EXIT
from tests.harness import REPO

pytestmark = pytest.mark.slow

BENCH = REPO / "bench"
NUMBER = r"-?\d+(?:\.\d+)?"
DEADLINE_S = 420  # one bench at its smallest, on a busy 2-core machine, with room to spare
PARALLEL = 2


@dataclass
class Smallest:
    """A bench's smallest arguments ("{out}": a file in the test's folder) and the lines its
    report must hold (regular expressions, searched line by line)."""
    args: list[str]
    promises: list[str]
    result_file: bool = False  # the promises are in the file "{out}", not in the output
    on_gpu: Smallest | None = None  # a GPU bench's run where there is one; without: NO_GPU


# Without a GPU a GPU bench must say so, with its own exit code (not a crash).
NO_GPU = ["^gpu_check: no GPU"]
GPU_CHECK = Smallest(["--steps", "3"], [rf"^0.5B +lora +ratio +{NUMBER}",
                                        rf"^1.5B +qlora +ratio +{NUMBER}"])


SMALLEST = {
    "defaults.py": Smallest(
        ["--rounds", "1", "--steps", "3", "--warm-up-steps", "0", "--fixed", "workers 0"],
        [rf"^round 1: auto \(workers \d+, prefetch \w+\) {NUMBER}, workers 0 {NUMBER}$",
         rf"^auto / best fixed \(workers 0\): {NUMBER} \(target >= 0.95\)$"]),
    "gpu_check.py": Smallest([], NO_GPU, on_gpu=GPU_CHECK),
    "gpu_check.sh": Smallest([], NO_GPU, on_gpu=GPU_CHECK),
    "idle.py": Smallest(
        ["--seconds", "1", "--settle", "0"],
        [rf"^console \(\d+\): {NUMBER} s CPU in 1 s",
         rf"^idle console, all processes: {NUMBER}% of a core \(target <= 0.5%\): (met|NOT met)$"]),
    "latency.py": Smallest(
        ["--steps", "3"],
        [rf"^polling every {interval} s: 3 records, latency median {NUMBER} ms, p95 {NUMBER} ms"
         for interval in ("0.2", "1.0")]),
    "live_views.py": Smallest(
        ["--pairs", "1", "--tabs", "1", "--steps", "3"],
        [rf"^pair 1: no tab {NUMBER} samples/s .* 1 tabs {NUMBER} samples/s .* \d+ updates",
         rf"^ratio 1 tabs / no tab: {NUMBER} \(target >= 0.95\)$"]),
    "overhead.py": Smallest(
        ["--pairs", "1", "--steps", "3", "--warm-up-steps", "0"],
        [rf"^steady-state samples/s: plain {NUMBER}, console {NUMBER}, ratio {NUMBER}",
         rf"^time to first step: plain {NUMBER} s, console {NUMBER} s, difference {NUMBER} s"]),
    "plain_trl.py": Smallest(["{out}", "--steps", "3"],
                             ['^{"start": ', rf'^{{"step": 3, "time": {NUMBER}}}$'],
                             result_file=True),
    "polling.py": Smallest(
        ["--pairs", "1", "--clients", "1", "--steps", "3"],
        [rf"^pair 1: quiet {NUMBER} samples/s, 1 clients {NUMBER} samples/s",
         rf"^ratio polled/quiet: {NUMBER} \(target >= 0.95\)$"]),
    "profile_overhead.py": Smallest(
        ["--seconds", "1", "--warmup", "0"],
        # Training was sampled, in both: forward and backward hold a share of each column.
        [rf"^  forward and backward +(?!0\.0%){NUMBER}% +(?!0\.0%){NUMBER}%$",
         rf"^  other +{NUMBER}% +{NUMBER}%$"]),
    "scale.py": Smallest(
        ["--jobs", "10", "--steps", "100", "--calls", "5", "--train-steps", "3"],
        [rf"^  /list_jobs +median +{NUMBER} ms, p95 +{NUMBER} ms .*, 10 jobs$",
         rf"^  /get_metrics since_step=90 +median +{NUMBER} ms.*, 10 records$",
         rf"^supervising a real run \(3 records .*scheduler thread {NUMBER} CPU s",
         rf"^  job view, charts drawn anew +median +{NUMBER} ms.*, charts \d+ KiB$",
         rf"^  job view, charts already drawn +median +{NUMBER} ms"]),
    "startup.py": Smallest(
        ["--rounds", "1", "--steps", "3", "--warm-up-steps", "0"],
        [rf"^round 1: plain script {NUMBER} s, warm start {NUMBER} s, cold start {NUMBER} s$",
         rf"^time to first step \(median\): plain script {NUMBER} s .* {NUMBER} s without$"]),
    "tokens.py": Smallest(
        ["--pairs", "1", "--steps", "3", "--rows", "50", "--warm-up-steps", "0"],
        [rf"^useful tokens/s: plain TRL \(padded\) {NUMBER}, TrainDeck {NUMBER}, ratio {NUMBER}",
         rf"^mean per-token loss: plain {NUMBER}, TrainDeck {NUMBER}, difference {NUMBER}%"]),
    "zip_checkpoint.py": Smallest(
        ["--size-mb", "1"],
        [rf"^download_model: {NUMBER} s wall, zip 1 MB",
         rf"^console RSS: baseline {NUMBER} MB, peak {NUMBER} MB, growth {NUMBER} MB"]),
}


def bench_scripts() -> list[str]:
    """What a person runs from bench/: shell scripts and Python files with a __main__ block (the
    modules they share have none)."""
    return sorted(path.name for path in BENCH.iterdir()
                  if path.suffix == ".sh" or (path.suffix == ".py" and
                                              'if __name__ == "__main__":' in path.read_text()))


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class BenchRun:
    smallest: Smallest  # what was run
    expected_exit: int
    result_file: Path | None
    code: int | None = None  # None: still running at the deadline, then stopped
    output: str = ""
    seconds: float = 0.0


def run_bench(name: str, folder: Path) -> BenchRun:
    """Run bench/NAME with its smallest arguments in `folder`; past the deadline, stop it and
    everything it started."""
    smallest, out = SMALLEST[name], str(folder / "result.jsonl")
    lacks_gpu = smallest.on_gpu is not None and not gpu_present()
    if smallest.on_gpu is not None and not lacks_gpu:
        smallest = smallest.on_gpu
    run = BenchRun(smallest, NO_DEVICE_EXIT if lacks_gpu else 0,
                   Path(out) if smallest.result_file else None)
    launcher = ["bash"] if name.endswith(".sh") else [sys.executable]
    command = [*launcher, f"bench/{name}", *(a.replace("{out}", out) for a in smallest.args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder), "PYTHON": sys.executable}
    started = time.monotonic()
    with open(folder / "output.txt", "w+") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        try:
            run.code = process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            stop(process)
        run.seconds = time.monotonic() - started
        output.seek(0)
        run.output = output.read()
    return run


def stop(process: subprocess.Popen) -> None:
    """Kill the bench and its descendants: its consoles, and their trainers, which lead process
    groups of their own (so a group kill would miss them)."""
    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    for child in [*started, process]:
        try:
            child.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    process.wait()


@pytest.fixture(scope="module")
def bench_runs(request, tmp_path_factory) -> dict[str, Future]:
    """The selected benches, PARALLEL at a time: most of a bench's time is spent waiting (for a
    console, a trainer, a poll), so two share the machine's cores well. In test order, so a
    test waits at most for its own bench."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=PARALLEL)
    try:
        yield {name: pool.submit(run_bench, name, tmp_path_factory.mktemp(name.replace(".", "-")))
               for name in selected if name in SMALLEST}
    finally:  # an interrupted session starts no more benches
        pool.shutdown(wait=True, cancel_futures=True)


def test_every_bench_has_its_smallest_arguments():
    found = bench_scripts()
    missing = [name for name in found if name not in SMALLEST]
    assert not missing, (f"bench/{missing[0]} has no smallest-arguments entry: add one to "
                         "SMALLEST in tests/test_benches.py (its tiniest run and result lines)")
    assert sorted(SMALLEST) == found, f"SMALLEST names benches that are gone: {SMALLEST.keys()}"
    assert {"scale.py", "plain_trl.py", "gpu_check.sh"} <= set(found)  # the walk sees them


@pytest.mark.timeout(DEADLINE_S + 120)
@pytest.mark.parametrize("name", bench_scripts())
def test_the_bench_runs_with_its_smallest_arguments(name, bench_runs):
    if name not in SMALLEST:
        pytest.fail(f"bench/{name} has no smallest-arguments entry in SMALLEST: add one")
    run = bench_runs[name].result()
    print(f"bench/{name}: exit {run.code} in {run.seconds:.1f} s")
    assert run.code is not None, \
        f"bench/{name} was still running after {DEADLINE_S} s: {run.output[-3000:]}"
    assert run.code == run.expected_exit, \
        f"bench/{name} exited {run.code}, not {run.expected_exit}: {run.output[-3000:]}"
    report = run.result_file.read_text() if run.result_file else run.output
    broken = [p for p in run.smallest.promises if not re.search(p, report, re.MULTILINE)]
    assert not broken, f"bench/{name}'s report lacks {broken}: {report[-3000:]}"
