"""Warm start: a spare-trainer process (`python -m engine.trainer.spare`) imports the heavy
libraries once when the console starts; each starting job is handed to it and runs in a copy of
it forked for that job, with every library already in memory, in its own process and process
group, running the same code as `python -m engine.train`. The copy costs milliseconds where a
fresh trainer spends seconds importing. Whatever it cannot serve exactly (torchrun jobs, an
environment that differs in anything read at import time, a spare process still importing or
gone) starts a fresh process instead."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import REPO_DIR

log = logging.getLogger("traindeck.spares")
# Read by the trainer when it runs, not when it imports: a job may set them differently.
PER_JOB_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "TRAINDECK_FAULTS"})
FORK_REPLY_TIMEOUT_S = 10.0


@dataclass
class SpareProcess:
    """The process that imports once and forks a trainer per job; what it has said so far."""

    popen: subprocess.Popen
    env: dict[str, str]
    status: dict[str, Any] | None = None
    pids: dict[int, int] = field(default_factory=dict)    # order id -> trainer pid
    exits: dict[int, int] = field(default_factory=dict)   # trainer pid -> exit code
    changed: threading.Condition = field(default_factory=threading.Condition)

    def listen(self) -> None:
        """Read what it says (a thread): its status, then each fork and each exit."""
        for line in self.popen.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self.changed:
                if "status" in message:
                    self.status = message
                elif "exit" in message:
                    self.exits[message["pid"]] = message["exit"]
                elif "id" in message:
                    self.pids[message["id"]] = message["pid"]
                self.changed.notify_all()

    @property
    def ready(self) -> bool:
        return self.popen.poll() is None and (self.status or {}).get("status") == "ready"

    def wait_for(self, predicate, timeout: float):
        with self.changed:
            self.changed.wait_for(predicate, timeout)
            return predicate()


class Spares:
    def __init__(self, folder: Path, enabled: bool = True):
        self.folder = folder
        self.enabled = enabled
        self.spare: SpareProcess | None = None
        self.handed_off = 0
        self._orders = 0
        # Each trainer's parent: only it can wait() on the trainer and report its exit, even
        # after a newer spare process has replaced it for new jobs.
        self.parents: dict[int, SpareProcess] = {}

    def start(self, env: dict[str, str]) -> None:
        """Have a spare process for `env` (the trainers' environment without a job's own keys)."""
        if not self.enabled or (self.spare is not None and self.spare.popen.poll() is None):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "spare.log", "ab") as errors:
            popen = subprocess.Popen([sys.executable, "-m", "engine.trainer.spare"], cwd=REPO_DIR,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=errors, start_new_session=True)
        self.spare = SpareProcess(popen, dict(env))
        threading.Thread(target=self.spare.listen, name="spare-trainers", daemon=True).start()

    def take(self, argv: list[str], env: dict[str, str], log_path: Path) -> int | None:
        """Start the job in a copy of the spare process; its pid, or None when a fresh process
        must be started instead."""
        spare = self.spare
        base = {k: v for k, v in env.items() if k not in PER_JOB_ENV}
        if spare is None or not spare.ready:
            self.start(base)  # a new one if it died; one still importing is left to finish
            return None
        if {k: v for k, v in spare.env.items() if k not in PER_JOB_ENV} != base:
            self.stop()  # imported under another environment: start one that matches
            self.start(base)
            return None
        self._orders += 1
        order = {"id": self._orders, "argv": argv, "env": env, "cwd": str(REPO_DIR),
                 "log": str(log_path)}
        try:
            spare.popen.stdin.write((json.dumps(order) + "\n").encode())
            spare.popen.stdin.flush()
        except OSError:
            self.spare = None
            return None
        pid = spare.wait_for(lambda: spare.pids.get(order["id"]), FORK_REPLY_TIMEOUT_S)
        if pid is None:
            log.error("the spare trainer did not start job %s in time; starting it afresh", argv)
            self.stop()
            return None
        self.handed_off += 1
        self.parents[pid] = spare
        return pid

    def exit_code(self, pid: int) -> int | None:
        """How a trainer started by a spare process ended (None: not known to have)."""
        parent = self.parents.get(pid)
        return parent.exits.get(pid) if parent is not None else None

    def will_report(self, pid: int) -> bool:
        """Whether the trainer's parent is still there to report its exit. (Until its copy has
        set its title a trainer's command line is the spare's: the parent is the sure witness.)"""
        parent = self.parents.get(pid)
        return parent is not None and parent.popen.poll() is None

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        parent = self.parents.get(pid)
        if parent is None or not parent.wait_for(lambda: pid in parent.exits, timeout):
            return None
        return parent.exits[pid]

    def stop(self) -> None:
        """End the spare process (trainers it started are not touched)."""
        spare, self.spare = self.spare, None
        if spare is not None and spare.popen.poll() is None:
            spare.popen.kill()
            spare.popen.wait()
