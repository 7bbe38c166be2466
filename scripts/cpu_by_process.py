"""Where a run's CPU goes, by kind of process: run it beside `make test` (or anything else), stop
it with Ctrl-C or SIGTERM, and it prints the CPU seconds each kind used while it watched.

    python scripts/cpu_by_process.py [--interval 0.5] [--save samples.json]

Every process is sampled twice a second (a process that lives less than that is missed; such
processes cost little); a process older than the watch counts only what it used since. The
kinds are TrainDeck's own processes (consoles, spare trainers, job trainers, tools, bench
scripts), the test runner, the browser and the rest by command.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import time
from collections import defaultdict

import psutil

KINDS = (  # the first that matches a command line names its kind
    ("spare trainer", r"engine\.trainer\.spare"),
    ("job trainer", r"-m engine\.train\b"),
    ("tool", r"-m engine\.trainer\.\w+"),
    ("console", r"\bapp\.py\b"),
    ("bench script", r"\bbench/\w+\.py"),
    ("test runner", r"pytest|xdist|execnet|exec\(eval\(sys\.stdin"),
    ("browser", r"chrom"),
    ("Slurm", r"slurm|munge"),
    ("pip", r"\bpip\b"),
)


def kind(command: str) -> str:
    for name, pattern in KINDS:
        if re.search(pattern, command):
            return name
    return command[:60]


def watch(interval: float) -> dict[tuple[int, float], list]:
    """{(pid, start time): [command, CPU seconds since the watch began]} until told to stop."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    began, seen, before = time.time(), {}, {}
    try:
        while not stopped:
            for process in psutil.process_iter(["pid", "cmdline", "create_time", "cpu_times",
                                                "name"]):
                info = process.info
                if info["cpu_times"] is None:
                    continue
                key = (info["pid"], info["create_time"])
                used = info["cpu_times"].user + info["cpu_times"].system
                # An ended process's command line reads empty: keep the first one seen.
                command = " ".join(info["cmdline"] or []) or f"[{info['name']}]"
                if key not in seen:
                    before[key] = used if info["create_time"] < began else 0.0
                    seen[key] = [command, 0.0]
                seen[key][1] = max(seen[key][1], used - before[key])
                if seen[key][0].startswith("[") and info["cmdline"]:
                    seen[key][0] = command
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return seen


def report(seen: dict) -> list[str]:
    totals, counts = defaultdict(float), defaultdict(int)
    for command, used in seen.values():
        totals[kind(command)] += used
        counts[kind(command)] += 1
    lines = [f"{used:8.1f} CPU s  {counts[name]:4d} processes  {name}"
             for name, used in sorted(totals.items(), key=lambda item: -item[1]) if used >= 0.5]
    return lines + [f"{sum(totals.values()):8.1f} CPU s  in all"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--save", help="also write every process's command and CPU seconds here")
    args = parser.parse_args()
    seen = watch(args.interval)
    if args.save:
        with open(args.save, "w") as out:
            json.dump(list(seen.values()), out)
    print("\n".join(report(seen)))


if __name__ == "__main__":
    main()
