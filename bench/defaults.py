"""Are the presets' `auto` data-loader choices as fast as the best fixed choice on this machine?

Runs the default preset (--steps steps, no checkpoints) through `python -m engine.train` with the
data-loader settings `auto` resolves to here and with fixed alternatives (workers 0, 2, 8; prefetch
PyTorch's default or 2), one run of each per round, for --rounds rounds in a rotating order, and
compares the median steady-state samples/s. Target: `auto` no more than 5% behind the best.

    python bench/defaults.py [--rounds 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.trainer_run import run_trainer, steady_rate  # noqa: E402
from engine.machine import auto_num_workers, auto_prefetch_factor, detect  # noqa: E402

BATCH = 8  # the default preset's batch size, no accumulation
FIXED = {
    "workers 0": (0, None),
    "workers 2": (2, None),
    "workers 2, prefetch 2": (2, 2),
    "workers 8": (8, None),
    "workers 8, prefetch 2": (8, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    machine = detect()
    workers = auto_num_workers(machine)
    settings = {f"auto (workers {workers}, prefetch {auto_prefetch_factor(workers)})": ("auto", "auto"),
                **FIXED}
    folder = Path(tempfile.mkdtemp(prefix="bench-defaults-"))
    cache = folder / "cache"
    base = {"max_steps": args.steps, "save_steps": 100000}
    run_trainer(folder / "warm-up", {**base, "max_steps": 5}, cache)  # fills the tokenized cache
    rates: dict[str, list[float]] = {name: [] for name in settings}
    names = list(settings)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            workers_, prefetch = settings[name]
            config = {**base, "dataloader_num_workers": workers_, "dataloader_prefetch_factor": prefetch}
            records = run_trainer(folder / f"r{round_}-{names.index(name)}", config, cache)
            rates[name].append(steady_rate(records, BATCH))
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    auto_name = names[0]
    best_name = max(FIXED, key=lambda n: medians[n])
    print(f"machine: {machine.describe()}, {os.cpu_count()} CPUs")
    for name in names:
        print(f"  {name:<38} median {medians[name]:7.1f} samples/s")
    ratio = medians[auto_name] / medians[best_name]
    print(f"auto / best fixed ({best_name}): {ratio:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
