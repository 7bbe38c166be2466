"""Time to the first step: a job submitted to a console with warm start, to one without (a
fresh `python -m engine.train` per job), and a plain TRL script from its process start.

Two consoles run side by side (idle between jobs); each round runs, in turn, the plain script,
a job on the warm console and a job on the cold one, all of --steps steps of the default job.
The consoles' first job (which fills the tokenized-dataset cache, as any earlier run of the
same data has) is left out. Target: submit to first step at most 2 s with warm start.

    python bench/startup.py [--rounds 3] [--steps 5] [--warm-up-steps 2]
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    command_line,
    machine_line,
    running_console,
    scratch,
    submit,
    wait_completed,
)
from bench.overhead import run_plain  # noqa: E402
from tests.harness import HTTPCaller, wait_warm  # noqa: E402


def first_step_after_submit(client: HTTPCaller, steps: int) -> float:
    submitted = time.time()
    job_id = wait_completed(client, submit(client, steps))["job_id"]
    return client.predict(job_id, 0, api_name="/get_metrics")[0]["time"] - submitted


def main() -> None:
    args = command_line(__doc__, rounds=3, steps=5, warm_up_steps=2).parse_args()
    folder = scratch("startup")
    results = {"plain": [], "warm": [], "cold": []}
    with ExitStack() as consoles:
        warm = consoles.enter_context(running_console(folder / "warm")).client
        cold = consoles.enter_context(running_console(folder / "cold", "--no-warm-start")).client
        wait_warm(warm)
        if args.warm_up_steps:  # each console's first job, which fills the cache, is left out
            first_step_after_submit(warm, args.warm_up_steps)
            first_step_after_submit(cold, args.warm_up_steps)
        for round_ in range(args.rounds):
            wait_warm(warm)  # the spare is back before the next job, as between real jobs
            results["plain"].append(run_plain(args.steps, folder)[1])
            results["warm"].append(first_step_after_submit(warm, args.steps))
            results["cold"].append(first_step_after_submit(cold, args.steps))
            print(f"round {round_ + 1}: plain script {results['plain'][-1]:.2f} s, "
                  f"warm start {results['warm'][-1]:.2f} s, "
                  f"cold start {results['cold'][-1]:.2f} s", flush=True)
    median = {k: statistics.median(v) for k, v in results.items()}
    print(machine_line())
    print(f"time to first step (median): plain script {median['plain']:.2f} s from process "
          f"start; console {median['warm']:.2f} s from submit with warm start "
          f"(target <= 2 s: {'met' if median['warm'] <= 2 else 'NOT met'}), "
          f"{median['cold']:.2f} s without")


if __name__ == "__main__":
    main()
