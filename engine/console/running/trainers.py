"""The trainer processes a supervisor follows: one interface (Trainer), and the kinds a
supervisor on this machine starts or finds (a Slurm job's, SlurmTrainer, lives in slurm.py):

- ChildTrainer: started by this console (`python -m engine.train`); its exit code is the truth;
- TorchrunTrainer: a child running torchrun's ranks; torchrun hides the ranks' codes, so rank 0's
  exit record (exit.json) speaks for the job, and ranks that lead their own sessions are killed
  one by one;
- ForkedTrainer: a copy of this console's spare-trainer process (warm start); that process is
  its parent, reaps it and reports its exit code;
- AttachedTrainer: started by an earlier console and followed again after a restart; it is not
  our child, so it is watched by pid and its exit record read when it is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

import psutil

from engine.console.metrics.log import MetricsLog
from engine.jobfiles import STOPPED_FOR_NOTICE, JobPaths, read_json


@dataclass
class Trainer:
    job_id: str
    paths: JobPaths
    pid: int
    timeout_s: float
    started_at: float
    processes: int = 1
    stop_action: str | None = None
    stop_requested_at: float | None = None
    heartbeat_time: float = 0.0
    heartbeat_mtime: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    descendants: dict[int, float] = field(default_factory=dict)  # pid -> start time
    microbatch_changes: list[dict[str, Any]] = field(default_factory=list)
    microbatch_mtime: float = 0.0
    metrics: MetricsLog = field(init=False)
    shown: tuple = ()  # what a view of it would show changes when this does

    attached = False
    alive_at_attach = True

    def __post_init__(self) -> None:
        self.metrics = MetricsLog(self.paths.metrics)

    def poll_exit(self) -> int | None:
        """The exit code once the process is gone (negative: killed by that signal)."""
        raise NotImplementedError

    def exit_record(self) -> dict[str, Any]:
        """exit.json, if this trainer wrote it (empty otherwise)."""
        recorded = read_json(self.paths.exit_record)
        return recorded if isinstance(recorded, dict) and recorded.get("pid") == self.pid else {}

    def recorded_exit(self) -> int | None:
        """The code this trainer wrote to exit.json, if it wrote one."""
        code = self.exit_record().get("code")
        return code if isinstance(code, int) else None

    def notice(self) -> str | None:
        """The cluster's notice (a signal's name) this trainer checkpointed and stopped on, as its
        exit record says: such a stop is the cluster's doing, never a person's pause."""
        recorded = self.exit_record()
        if recorded.get("stopped_for") != STOPPED_FOR_NOTICE:
            return None
        return str(recorded.get("notice") or "a signal")[:40]

    def has_exit_record(self) -> bool:
        return True

    def cluster_reason(self) -> str | None:
        """Why a cluster scheduler ended this trainer, if one did (never, locally)."""
        return None

    def job_fields(self) -> dict[str, Any]:
        """What the job records about this attempt's executor (a cluster's job id)."""
        return {}

    def reap_after_kill(self) -> int:
        return -signal.SIGKILL

    def note_processes(self) -> None:
        """Remember the processes under a multi-process trainer, to kill them all later."""
        if self.processes <= 1:
            return
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                self.descendants.setdefault(child.pid, child.create_time())
        except psutil.NoSuchProcess:
            pass

    def kill(self) -> None:
        self.note_processes()  # ranks still running are torchrun's children now
        kill_group(self.pid)
        kill_descendants(self.descendants)

    def last_progress_time(self) -> float:
        return max(self.heartbeat_time, self.started_at)


@dataclass
class ChildTrainer(Trainer):
    popen: subprocess.Popen | None = None

    def poll_exit(self) -> int | None:
        return self.popen.poll()

    def reap_after_kill(self) -> int:
        try:
            return self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return -signal.SIGKILL


@dataclass
class TorchrunTrainer(ChildTrainer):
    def poll_exit(self) -> int | None:
        code = self.popen.poll()
        if code is None:
            return None
        recorded = self.recorded_exit()  # rank 0's pause/cancel/invalid, which torchrun hides
        return code if recorded is None else recorded


@dataclass
class ForkedTrainer(Trainer):
    spares: Any = None  # engine.console.running.spares.Spares, which hears the exit codes

    def poll_exit(self) -> int | None:
        code = self.spares.exit_code(self.pid)
        if code is not None:
            return code
        if self.spares.will_report(self.pid):
            return None
        # Its parent, the spare process, ended: the trainer runs on (or ran) as an orphan.
        # The last report may still be on its way; then the trainer's own record speaks.
        code = self.spares.wait_exit(self.pid, timeout=1.0)
        if code is None and is_alive(self.pid, self.paths):
            return None
        if code is None:
            code = self.recorded_exit()
        return -signal.SIGKILL if code is None else code

    def has_exit_record(self) -> bool:
        return self.spares.exit_code(self.pid) is not None or self.recorded_exit() is not None

    def reap_after_kill(self) -> int:
        code = self.spares.wait_exit(self.pid, timeout=5)
        return -signal.SIGKILL if code is None else code


@dataclass
class AttachedTrainer(Trainer):
    alive_at_attach: bool = True
    attached = True

    def poll_exit(self) -> int | None:
        if self.alive_at_attach and is_alive(self.pid, self.paths):
            return None
        code = self.recorded_exit()
        return -signal.SIGKILL if code is None else code  # no record: killed, or crashed hard

    def has_exit_record(self) -> bool:
        return self.recorded_exit() is not None


def is_alive(pid: int, paths: JobPaths) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return str(paths.job_file) in " ".join(process.cmdline())  # not a reused pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def kill_group(pid: int) -> None:
    """SIGKILL the trainer's whole process group (data-loader workers, torchrun ranks)."""
    if pid <= 1 or pid == os.getpgrp():  # 0 would mean our own group: never
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_descendants(known: dict[int, float]) -> None:
    """SIGKILL processes seen under a trainer that lead process groups of their own (torchrun
    starts each rank in a new session, so killing torchrun's group misses them). `known` maps
    pid to start time, so a pid reused since is left alone."""
    for pid, started in known.items():
        try:
            if psutil.Process(pid).create_time() != started:
                continue
            if os.getpgid(pid) == pid:
                kill_group(pid)
            else:
                os.kill(pid, signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            pass
