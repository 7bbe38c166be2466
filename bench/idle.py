"""How much CPU does a console take when nobody uses it?

Starts `python app.py` on a fresh workspace, waits until it is ready (spare trainer imported),
then measures the CPU time of the console and everything it started (the spare trainer) over
--seconds with nobody connected. Target: at most 0.5% of one core.

    python bench/idle.py [--seconds 60] [--settle 5]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import command_line, running_console, scratch  # noqa: E402
from tests.harness import wait_warm  # noqa: E402


def cpu_seconds(root: psutil.Process) -> dict[str, float]:
    """CPU time (user + system) of each process in the tree, by name."""
    times = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            t = process.cpu_times()
            label = "console" if process.pid == root.pid else " ".join(process.cmdline()[1:3])
            times[f"{label} ({process.pid})"] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return times


def main() -> None:
    args = command_line(__doc__, seconds=60.0, settle=5.0).parse_args()
    with running_console(scratch("idle") / "workspace") as console:
        wait_warm(console.client)
        console.client.http.close()
        time.sleep(args.settle)  # let the last request's work settle
        root = psutil.Process(console.process.pid)
        before = cpu_seconds(root)
        time.sleep(args.seconds)
        after = cpu_seconds(root)
    total = 0.0
    for name, end in after.items():
        used = end - before.get(name, 0.0)
        total += used
        print(f"{name}: {used:.3f} s CPU in {args.seconds:g} s "
              f"({100 * used / args.seconds:.2f}% of a core)")
    share = 100 * total / args.seconds
    print(f"idle console, all processes: {share:.2f}% of a core "
          f"(target <= 0.5%): {'met' if share <= 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
