"""Where does a training step's time go, in the console's trainer and in the plain TRL script?

Runs bench/plain_trl.py and `python -m engine.train` (the console's command, on the job the
console's default preset makes: same model, data, batch and seed) one after the other, samples
each with py-spy for --seconds once training is under way, and reports the share of the main
thread's samples spent in each part of the step. What the console adds shows up as its own lines
(TrainDeck's callbacks, per-step logging).

    python bench/profile_overhead.py [--seconds 10] [--warmup 5]    (needs py-spy)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import command_line, plain_trl_command, scratch  # noqa: E402
from engine.jobfiles import SUPERVISED_ENV  # noqa: E402
from engine.machine import detect  # noqa: E402
from engine.presets import PresetLibrary  # noqa: E402
from engine.resolve import resolve  # noqa: E402
from tests.harness import REPO  # noqa: E402

# The first matching part names a sample, most specific first (regular expressions searched in
# the sample's stack of "function (file:line)" frames).
PARTS = [
    # The callbacks' own frames: the trainer's whole epoch loop also runs in hooks.py (its
    # _run_epoch override), so the file's name alone would claim every sample.
    ("TrainDeck callbacks (metrics, heartbeat, requests)",
     (r"\.on_\w+ \(engine/trainer/hooks\.py", r"engine/trainer/heartbeat\.py")),
    ("logging (HF: loss/grad-norm gather, callbacks)", ("_maybe_log_save_evaluate",)),
    ("optimizer and scheduler step", ("optimizer.py", "adamw", "lr_scheduler")),
    ("forward and backward", ("training_step", "compute_loss")),
    ("data loading and collation", ("dataloader", "data_collator", "get_batch_samples", "collate")),
]
STEPS = 3000  # long enough to outlast start-up and the sampling window
TRAINING_WITHIN_S = 300


def py_spy() -> str:
    found = shutil.which("py-spy") or Path(sys.executable).parent / "py-spy"
    if not Path(found).exists():
        sys.exit("profile_overhead: py-spy is not installed (pip install py-spy, or the project's "
                 "test extra)")
    return str(found)


def wait_for_training(pid: int, deadline: float) -> None:
    """Until the process's main thread is inside a training step (one py-spy dump a second):
    start-up takes from seconds to minutes, depending on how busy the machine is."""
    while time.monotonic() < deadline:
        dump = subprocess.run([py_spy(), "dump", "--pid", str(pid), "--nonblocking"],
                              capture_output=True, text=True)
        if "training_step" in dump.stdout:
            return
        time.sleep(1)
    raise RuntimeError(f"process {pid} did not start training within {TRAINING_WITHIN_S} s")


def profile(command: list[str], env: dict[str, str], seconds: float, warmup: float,
            out: Path) -> Counter:
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_training(process.pid, deadline=time.monotonic() + TRAINING_WITHIN_S)
        time.sleep(warmup)  # past the first steps, which are slower than the steady ones
        sampled = subprocess.run([py_spy(), "record", "--pid", str(process.pid), "--duration",
                                  str(max(1, round(seconds))), "--rate", "200", "--format", "raw",
                                  "--output", str(out), "--nonblocking"], capture_output=True,
                                 text=True)
    finally:
        process.kill()
        process.wait()
    if sampled.returncode != 0:
        raise RuntimeError(f"py-spy exited {sampled.returncode}: {sampled.stderr[-2000:]}")
    parts: Counter = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith(("<module>", "_run_module_as_main")):
            continue  # other threads (heartbeat, autograd) are not the step's timeline
        name = next((part for part, marks in PARTS if any(re.search(m, stack) for m in marks)),
                    "other")
        parts[name] += int(count)
    return parts


def main() -> None:
    parser = command_line(__doc__, seconds=10.0)
    parser.add_argument("--warmup", type=float, default=5,
                        help="seconds between the first training step and sampling")
    args = parser.parse_args()
    folder = scratch("profile")
    config = resolve({"max_steps": STEPS, "save_steps": 100000}, PresetLibrary(), detect(),
                     base_dir=REPO).config
    (folder / "job").mkdir()
    job_file = folder / "job" / "job.yaml"
    job_file.write_text(yaml.safe_dump({"job_id": "profile", "config": config.to_dict(),
                                        "cache_dir": str(folder / "cache")}))
    runs = {
        "plain TRL script": (plain_trl_command(folder / "plain.jsonl", STEPS), {}),
        "console trainer": ([sys.executable, "-m", "engine.train", str(job_file)],
                            {SUPERVISED_ENV: "1"}),
    }
    results = {name: profile(command, env, args.seconds, args.warmup,
                             folder / f"profile-{number}.txt")
               for number, (name, (command, env)) in enumerate(runs.items())}
    names = [part for part, _ in PARTS] + ["other"]
    print(f"machine: {os.cpu_count()} CPUs; py-spy, {args.seconds:.0f} s of steady training each; "
          f"share of the main thread's samples")
    print(f"  {'':<52}" + "".join(f"{name:>20}" for name in results))
    for part in names:
        cells = "".join(f"{100 * r[part] / max(1, sum(r.values())):19.1f}%"
                        for r in results.values())
        print(f"  {part:<52}{cells}")


if __name__ == "__main__":
    main()
