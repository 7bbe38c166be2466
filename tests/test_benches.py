"""Every script under bench/ runs once with its smallest arguments, so a bench that stops running
(an engine or UI change under it) fails the full tier, not the day someone needs its numbers.

The scripts are found, not listed: a new bench without an entry in SMALLEST fails until it gets
one. Each runs as `python bench/NAME` would, in its own session, with a deadline; the test checks
the exit code and the result lines the bench promises (its numbers), not only the exit code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.common import NO_DEVICE_EXIT
from tests.harness import REPO

pytestmark = pytest.mark.slow

BENCH = REPO / "bench"
NUMBER = r"-?\d+(?:\.\d+)?"
DEADLINE_S = 420  # one bench at its smallest, on a busy 2-core machine, with room to spare


@dataclass
class Smallest:
    """A bench's smallest arguments ("{out}": a file in the test's folder) and the lines its
    report must hold (regular expressions, searched line by line)."""
    args: list[str]
    promises: list[str]
    result_file: str | None = None  # read the promises here instead of the output
    on_gpu: Smallest | None = None  # a GPU bench's run where there is one; without: NO_GPU


# Without a GPU a GPU bench must say so, with its own exit code, and do nothing else.
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
                             result_file="{out}"),
    "polling.py": Smallest(
        ["--pairs", "1", "--clients", "1", "--steps", "3"],
        [rf"^pair 1: quiet {NUMBER} samples/s, 1 clients {NUMBER} samples/s",
         rf"^ratio polled/quiet: {NUMBER} \(target >= 0.95\)$"]),
    "profile_overhead.py": Smallest(
        ["--seconds", "1", "--warmup", "8"],
        [rf"^  forward and backward +{NUMBER}% +{NUMBER}%$", rf"^  other +{NUMBER}% +{NUMBER}%$"]),
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


def run_bench(command: list[str], folder: Path) -> tuple[int, str, float]:
    """(exit code, stdout and stderr, seconds). Past the deadline the bench gets SIGINT, so its
    `finally` stops the consoles it started, then its whole session is killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder), "PYTHON": sys.executable}
    started = time.monotonic()
    with open(folder / "output.txt", "w+") as output:
        # SIGINT as Python's default (a KeyboardInterrupt), even where pytest runs in the
        # background of a shell, which starts its children with SIGINT ignored.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            pytest.fail(f"{command[1]} was still running after {DEADLINE_S} s: "
                        f"{(folder / 'output.txt').read_text()[-3000:]}")
        output.seek(0)
        return process.returncode, output.read(), time.monotonic() - started


def test_every_bench_has_its_smallest_arguments():
    found = bench_scripts()
    missing = [name for name in found if name not in SMALLEST]
    assert not missing, (f"bench/{missing[0]} has no smallest-arguments entry: add one to "
                         "SMALLEST in tests/test_benches.py (its tiniest run and result lines)")
    assert sorted(SMALLEST) == found, f"SMALLEST names benches that are gone: {SMALLEST.keys()}"
    assert {"scale.py", "plain_trl.py", "gpu_check.sh"} <= set(found)  # the walk sees them


@pytest.mark.parametrize("name", bench_scripts())
def test_the_bench_runs_with_its_smallest_arguments(name, tmp_path):
    if name not in SMALLEST:
        pytest.fail(f"bench/{name} has no smallest-arguments entry in SMALLEST: add one")
    smallest, out = SMALLEST[name], str(tmp_path / "result.jsonl")
    lacks_gpu = smallest.on_gpu is not None and not gpu_present()
    if smallest.on_gpu is not None and not lacks_gpu:
        smallest = smallest.on_gpu
    launcher = ["bash"] if name.endswith(".sh") else [sys.executable]
    command = [*launcher, f"bench/{name}", *(a.replace("{out}", out) for a in smallest.args)]
    code, output, seconds = run_bench(command, tmp_path)
    print(f"bench/{name}: exit {code} in {seconds:.1f} s")
    expected = NO_DEVICE_EXIT if lacks_gpu else 0
    assert code == expected, f"bench/{name} exited {code}, not {expected}: {output[-3000:]}"
    report = Path(smallest.result_file.replace("{out}", out)).read_text() \
        if smallest.result_file else output
    broken = [p for p in smallest.promises if not re.search(p, report, re.MULTILINE)]
    assert not broken, f"bench/{name}'s report lacks {broken}: {report[-3000:]}"
