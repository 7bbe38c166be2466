"""Warm start: a spare-trainer process (`python -m engine.trainer.spare`) imports the heavy
libraries once when the console starts; each starting job is handed to it and runs in a copy of
it forked for that job, with every library already in memory, in its own process and process
group, running the same code as `python -m engine.train`. The copy costs milliseconds where a
fresh trainer spends seconds importing. Whatever it cannot serve exactly (torchrun jobs, an
environment that differs in anything read at import time, a spare process still importing or
gone) starts a fresh process instead. The console's trainer-side tools (export, generate) run
in copies the same way (engine.console.results.tools)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import REPO_DIR

log = logging.getLogger("traindeck.spares")
# Read by the trainer when it runs, not when it imports: a job may set them differently.
PER_JOB_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "TRAINDECK_FAULTS"})
FORK_REPLY_TIMEOUT_S = 10.0
# How long a starting job waits for a spare that is still importing before it starts afresh (a
# spare slower than this is stuck, not busy).
IMPORT_WAIT_S = 120.0


@dataclass
class SpareProcess:
    """The process that imports once and forks a trainer per job; what it has said so far."""

    popen: subprocess.Popen
    env: dict[str, str]
    started_at: float = field(default_factory=time.time)
    status: dict[str, Any] | None = None
    pids: dict[int, int] = field(default_factory=dict)    # order id -> trainer pid
    exits: dict[int, int] = field(default_factory=dict)   # trainer pid -> exit code
    changed: threading.Condition = field(default_factory=threading.Condition)
    orders: int = 0

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
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def idle(self) -> bool:
        """No trainer it forked is still running (so nobody needs its exit reports)."""
        with self.changed:
            return set(self.pids.values()) <= set(self.exits)

    @property
    def ready(self) -> bool:
        return self.alive and (self.status or {}).get("status") == "ready"

    @property
    def importing(self) -> bool:
        return self.alive and self.status is None

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            self.changed.wait_for(predicate, timeout)
            return predicate()

    def fork(self, order: dict[str, Any]) -> int | None:
        """Have it start the job `order` describes; the trainer's pid (None: no answer in time)."""
        with self.changed:
            self.orders += 1
            order = {**order, "id": self.orders}
            self.popen.stdin.write((json.dumps(order) + "\n").encode())
            self.popen.stdin.flush()
        return self.wait_for(lambda: self.pids.get(order["id"]), FORK_REPLY_TIMEOUT_S)

    def end(self) -> None:
        if self.alive:
            self.popen.kill()
            self.popen.wait()


class SparePool:
    """The spare processes of this Python process, one per trainer environment, shared by every
    engine in it (one console has one engine; a test session has many, and imports once). Each
    ends when this process does: its stdin closes."""

    def __init__(self):
        self._spares: dict[tuple, SpareProcess] = {}
        self._lock = threading.Lock()

    def get(self, env: dict[str, str], log_folder: Path) -> SpareProcess:
        key = tuple(sorted(env.items()))
        with self._lock:
            spare = self._spares.get(key)
            if spare is None or not spare.alive:
                # Another environment now: spares of the old ones that nobody waits on go.
                for old_key, old in list(self._spares.items()):
                    if old_key != key and old.idle:
                        del self._spares[old_key]
                        old.end()
                spare = self._spares[key] = self._launch(env, log_folder)
            return spare

    @staticmethod
    def _launch(env: dict[str, str], log_folder: Path) -> SpareProcess:
        log_folder.mkdir(parents=True, exist_ok=True)
        with open(log_folder / "spare.log", "ab") as errors:
            popen = subprocess.Popen([sys.executable, "-m", "engine.trainer.spare"], cwd=REPO_DIR,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=errors, start_new_session=True)
        spare = SpareProcess(popen, dict(env))
        threading.Thread(target=spare.listen, name="spare-trainers", daemon=True).start()
        return spare

    def end_all(self) -> None:
        """End every spare now rather than when this process exits (a test session does, before
        it looks for processes that outlived its tests)."""
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            spare.end()

    def discard(self, spare: SpareProcess) -> None:
        """End a spare that misbehaved, so the next request starts a new one."""
        with self._lock:
            for key, known in list(self._spares.items()):
                if known is spare:
                    del self._spares[key]
        spare.end()


POOL = SparePool()


class Spares:
    """One engine's use of the pool: which spare serves its jobs, and each trainer's parent."""

    def __init__(self, folder: Path, enabled: bool = True, pool: SparePool = POOL):
        self.folder = folder
        self.enabled = enabled and os.environ.get("TRAINDECK_WARM_START", "1") != "0"
        self.pool = pool
        self.spare: SpareProcess | None = None
        self.handed_off = 0
        self.tools_started_warm = 0
        # Each trainer's parent: only it can wait() on the trainer and report its exit, even
        # after a newer spare process has replaced it for new jobs.
        self.parents: dict[int, SpareProcess] = {}

    def start(self, env: dict[str, str]) -> None:
        """Have a spare process for `env` (the trainers' environment without a job's own keys)."""
        if self.enabled:
            self.spare = self.pool.get(env, self.folder)

    def importing(self, env: dict[str, str], now: float) -> float | None:
        """Seconds the spare for `env` has been importing, while a starting job should wait for
        it (None: start now). It began importing before a fresh trainer would, so it is ready
        sooner, and the two would only share the CPU; past IMPORT_WAIT_S the job starts afresh."""
        if not self.enabled:
            return None
        self.start({k: v for k, v in env.items() if k not in PER_JOB_ENV})
        spare = self.spare
        if spare is None or not spare.importing:
            return None
        waited = max(0.0, now - spare.started_at)
        return waited if waited < IMPORT_WAIT_S else None

    def take(self, argv: list[str], env: dict[str, str], log_path: Path) -> int | None:
        """Start the job in a copy of the spare process; its pid, or None when a fresh process
        must be started instead."""
        if not self.enabled:
            return None
        base = {k: v for k, v in env.items() if k not in PER_JOB_ENV}
        self.start(base)  # the spare for this environment (a new one if it died or differs)
        spare = self.spare
        if not spare.ready:
            return None  # still importing: this job starts fresh, the next one warm
        pid = self._fork(spare, {"argv": argv, "env": env, "log": str(log_path)})
        if pid is not None:
            self.handed_off += 1
        return pid

    def run_tool(self, argv: list[str], stdin: Path | None, stdout: Path,
                 log_path: Path) -> int | None:
        """Start a trainer-side tool (`python -m engine.trainer.<tool> ...`) in a copy of the
        ready spare, in the spare's environment; its pid, or None when it must run as a fresh
        process (no spare ready: a tool never waits for one)."""
        spare = self.spare  # read once: the engine closing sets it to None meanwhile
        if not self.enabled or spare is None or not spare.ready:
            return None
        pid = self._fork(spare, {"argv": argv, "env": spare.env, "log": str(log_path),
                          "stdout": str(stdout), "stdin": str(stdin) if stdin else None})
        if pid is not None:
            self.tools_started_warm += 1
        return pid

    def _fork(self, spare: SpareProcess, order: dict[str, Any]) -> int | None:
        try:
            pid = spare.fork({**order, "cwd": str(REPO_DIR)})
        except OSError:
            pid = None
        if pid is None:
            log.error("the spare trainer did not start %s; starting it afresh", order["argv"])
            self.pool.discard(spare)
            return None
        self.parents[pid] = spare
        return pid

    def describe(self) -> dict[str, Any]:
        """For /health: whether the next job starts warm."""
        spare = self.spare
        state = ("off" if not self.enabled else "none" if spare is None
                 else "ready" if spare.ready
                 else "importing" if spare.alive and spare.status is None
                 else (spare.status or {}).get("status", "ended"))  # e.g. "unusable: ..."
        return {"state": state, "pid": spare.popen.pid if spare else None,
                "jobs_started_warm": self.handed_off, "tools_started_warm": self.tools_started_warm}

    def exit_code(self, pid: int) -> int | None:
        """How a trainer started by a spare process ended (None: not known to have)."""
        parent = self.parents.get(pid)
        return parent.exits.get(pid) if parent is not None else None

    def will_report(self, pid: int) -> bool:
        """Whether the trainer's parent is still there to report its exit. (Until its copy has
        set its title a trainer's command line is the spare's: the parent is the sure witness.)"""
        parent = self.parents.get(pid)
        return parent is not None and parent.alive

    def wait_exit(self, pid: int, timeout: float) -> int | None:
        parent = self.parents.get(pid)
        if parent is None or not parent.wait_for(lambda: pid in parent.exits, timeout):
            return None
        return parent.exits[pid]

    def stop(self) -> None:
        """This engine is done with its spare; the pool keeps it for the next engine."""
        self.spare = None
