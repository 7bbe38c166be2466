"""Does launching from the console cost anything over a hand-written TRL script?

The same training (tiny model, chat sample, batch 8, LoRA r16, fp32, --steps steps, seed 42) is
run (A) as bench/plain_trl.py, a script written directly against SFTTrainer, and (B) submitted
through the API of a running console, alternating A B A B for --pairs pairs. Reports each run's
steady-state samples/s (first 10% of steps skipped), the B/A ratio, and the time from start (A:
process start; B: the submit call) to the first optimizer step.
While B trains, one client follows it by polling /get_job every --poll seconds (0.5: what a
script or a browser tab watching the job does). B is submitted with every speed lever off
(padded batches, as the plain script), and its resolved config is checked against the plain
script's settings, so both do the same work.
Targets: ratio >= 0.95 with the job followed; B's time to first step at most 1 s above A's.

    python bench/overhead.py [--pairs 3] [--steps 300] [--poll 0.5] [--warm-up-steps 5]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    command_line,
    machine_line,
    run_plain_trl,
    running_console,
    samples_per_s,
    scratch,
    submit,
    wait_completed,
)
from tests.harness import HTTPCaller  # noqa: E402

BATCH = 8
# bench/plain_trl.py's settings, as the job's resolved config must have them.
PLAIN_SETTINGS = {"precision": "fp32", "gradient_checkpointing": False, "padding_free": False,
                  "packing": False, "per_device_train_batch_size": BATCH,
                  "gradient_accumulation_steps": 1, "learning_rate": 2e-4, "max_length": 512,
                  "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "seed": 42,
                  "lr_scheduler_type": "cosine", "use_liger_kernel": False}


def run_plain(steps: int, folder: Path) -> tuple[float, float]:
    """(steady samples/s, seconds from process start to the first step) of the plain script."""
    lines = run_plain_trl(folder / f"plain-{time.time():.0f}.jsonl", steps)
    start, points = lines[0]["start"], [line for line in lines if "step" in line]
    return samples_per_s(points, BATCH), points[0]["time"] - start


def run_console(client: HTTPCaller, steps: int, poll_s: float = 0.5) -> tuple[float, float]:
    submitted = time.time()
    job = wait_completed(client, submit(client, steps, padding_free=False), poll_s)
    job_id = job["job_id"]
    differs = {k: (job["config"].get(k), v) for k, v in PLAIN_SETTINGS.items()
               if job["config"].get(k) != v}
    assert not differs, f"the job's resolved config differs from the plain script's: {differs}"
    points = client.predict(job_id, 0, api_name="/get_metrics")
    return samples_per_s(points, BATCH), points[0]["time"] - submitted


def main() -> None:
    parser = command_line(__doc__, pairs=3, steps=300, warm_up_steps=5)
    parser.add_argument("--poll", type=float, default=0.5,
                        help="seconds between the following client's /get_job calls")
    args = parser.parse_args()
    folder = scratch("overhead")
    plain, console = [], []
    with running_console(folder / "workspace") as running:
        if args.warm_up_steps:  # fills the tokenized-dataset cache, as for any re-run
            wait_completed(running.client, submit(running.client, args.warm_up_steps))
        for pair in range(args.pairs):
            a = run_plain(args.steps, folder)
            b = run_console(running.client, args.steps, args.poll)
            plain.append(a)
            console.append(b)
            print(f"pair {pair + 1}: plain TRL {a[0]:.1f} samples/s (first step after "
                  f"{a[1]:.2f} s), console {b[0]:.1f} samples/s (first step {b[1]:.2f} s "
                  "after submit)", flush=True)
    a_rate = statistics.median(r for r, _ in plain)
    b_rate = statistics.median(r for r, _ in console)
    a_first = statistics.median(f for _, f in plain)
    b_first = statistics.median(f for _, f in console)
    print(machine_line())
    print(f"steady-state samples/s: plain {a_rate:.1f}, console {b_rate:.1f}, "
          f"ratio {b_rate / a_rate:.3f} (target >= 0.95, followed by one client polling "
          f"/get_job every {args.poll:g} s)")
    print(f"time to first step: plain {a_first:.2f} s, console {b_first:.2f} s, "
          f"difference {b_first - a_first:+.2f} s (target <= +1 s)")


if __name__ == "__main__":
    main()
