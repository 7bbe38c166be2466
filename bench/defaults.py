"""Are the presets' `auto` data-loader choices as fast as the best fixed choice on this machine?

Runs the default preset (--steps steps, no checkpoints) through `python -m engine.train` with the
data-loader settings `auto` resolves to here and with fixed alternatives (workers 0, 2, 8; prefetch
PyTorch's default or 2), one run of each per round, for --rounds rounds in a rotating order, and
compares the median steady-state samples/s. Target: `auto` no more than 5% behind the best.

    python bench/defaults.py [--rounds 3] [--steps 300] [--warm-up-steps 5] [--fixed NAME ...]
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import command_line, samples_per_s, scratch  # noqa: E402
from bench.trainer_run import run_trainer  # noqa: E402
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
    parser = command_line(__doc__, rounds=3, steps=300, warm_up_steps=5)
    parser.add_argument("--fixed", nargs="+", choices=list(FIXED), default=list(FIXED),
                        help="the fixed settings to compare with (default: all)")
    args = parser.parse_args()
    machine = detect()
    workers = auto_num_workers(machine)
    auto_name = f"auto (workers {workers}, prefetch {auto_prefetch_factor(workers)})"
    settings = {auto_name: ("auto", "auto"), **{name: FIXED[name] for name in args.fixed}}
    folder = scratch("defaults")
    cache = folder / "cache"
    base = {"max_steps": args.steps, "save_steps": 100000}
    if args.warm_up_steps:  # fills the tokenized cache, so that no measured run pays for it
        run_trainer(folder / "warm-up", {**base, "max_steps": args.warm_up_steps}, cache)
    rates: dict[str, list[float]] = {name: [] for name in settings}
    names = list(settings)
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            workers_, prefetch = settings[name]
            config = {**base, "dataloader_num_workers": workers_,
                      "dataloader_prefetch_factor": prefetch}
            records = run_trainer(folder / f"r{round_}-{names.index(name)}", config, cache)
            rates[name].append(samples_per_s(records, BATCH))
        print(f"round {round_ + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names),
              flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    best_name = max(names[1:], key=lambda n: medians[n])
    print(f"machine: {machine.describe()}, {os.cpu_count()} CPUs")
    for name in names:
        print(f"  {name:<38} median {medians[name]:7.1f} samples/s")
    ratio = medians[auto_name] / medians[best_name]
    print(f"auto / best fixed ({best_name}): {ratio:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
