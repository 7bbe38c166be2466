"""Follows running trainers: launches them in their own process group, tails their metrics,
watches their heartbeat, delivers pause/cancel requests, and turns each exit into a final status.

Modelled on a work-horse monitor: wait without blocking, kill the whole process group after a
grace period or a silent heartbeat, and explain every failure with its cause and the log's tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from engine.job import Job, JobStatus
from engine.jobfiles import (CANCEL, EXIT_CANCELLED, EXIT_COMPLETED, EXIT_INVALID, EXIT_PAUSED,
                             PAUSE, SUPERVISED_ENV, JobPaths, clear_requests, read_json, request)
from engine.metrics import MetricsLog, truncate_after

REPO_DIR = Path(__file__).resolve().parent.parent
CANCEL_GRACE_S = 10.0  # a cancel honoured at the next step boundary; then the group is killed
LOG_TAIL_LINES = 15
LOG_NOISE = ("Failed to load CPU gemm_4bit_forward",)  # harmless bitsandbytes notice on CPUs


@dataclass
class TrainerExit:
    job_id: str
    status: str
    exit_code: int | None
    error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainerProcess:
    """One trainer: a child this console started, or one re-attached after a console restart."""

    job_id: str
    paths: JobPaths
    pid: int
    timeout_s: float
    started_at: float
    popen: subprocess.Popen | None = None
    alive_at_attach: bool = True  # False: re-attached after a restart, but already gone
    metrics: MetricsLog = field(init=False)
    stop_action: str | None = None
    stop_requested_at: float | None = None
    heartbeat_time: float = 0.0
    heartbeat_mtime: float = 0.0
    heartbeat: dict[str, Any] = field(default_factory=dict)
    processes: int = 1  # more than one: torchrun, whose ranks report through exit.json
    descendants: dict[int, float] = field(default_factory=dict)  # pid -> start time

    def __post_init__(self) -> None:
        self.metrics = MetricsLog(self.paths.metrics)

    def poll_exit(self) -> int | None:
        """The exit code once the process is gone (negative: killed by that signal)."""
        if self.popen is not None:
            code = self.popen.poll()
            if code is not None and self.processes > 1:
                recorded = self.recorded_exit()  # rank 0's pause/cancel/invalid, which torchrun hides
                return code if recorded is None else recorded
            return code
        if self.alive_at_attach and _is_alive(self.pid, self.paths):
            return None
        code = self.recorded_exit()
        return -signal.SIGKILL if code is None else code  # no record: killed, or crashed hard

    def recorded_exit(self) -> int | None:
        recorded = read_json(self.paths.exit_record) or {}
        if recorded.get("pid") == self.pid and isinstance(recorded.get("code"), int):
            return recorded["code"]
        return None

    def last_progress_time(self) -> float:
        return max(self.heartbeat_time, self.started_at)


def _is_alive(pid: int, paths: JobPaths) -> bool:
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


def trainer_command(job_file: Path, processes: int = 1) -> list[str]:
    """One process, or one per GPU under torchrun (DDP), on a free rendezvous port."""
    train = ["-m", "engine.train", str(job_file)]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={processes}", *train]
    return [sys.executable, *train]


def write_job_file(paths: JobPaths, job: Job, cache_dir: Path, resume_from: str | None) -> None:
    """The trainer's input; it also carries what `repair-db` needs to rebuild the job's record."""
    paths.root.mkdir(parents=True, exist_ok=True)
    document = {"job_id": job.job_id, "name": job.name, "config": job.config,
                "resume_from": resume_from, "cache_dir": str(cache_dir),
                "owner": job.owner, "priority": job.priority, "seq": job.seq,
                "created_at": job.created_at, "shared": job.shared}
    tmp = paths.job_file.with_name(".job.yaml.tmp")
    tmp.write_text(yaml.safe_dump(document, sort_keys=False))
    os.replace(tmp, paths.job_file)


def log_tail(paths: JobPaths, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(paths.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(LOG_NOISE)]
    return "\n".join(kept[-lines:])


DISK_FULL_FREE_BYTES = 16 << 20
DISK_FULL_WORDS = ("No space left on device", "Errno 28", "ENOSPC")


def disk_full_note(paths: JobPaths, tail: str) -> str | None:
    """Why a trainer failed, when the disk holding its folder is (or was) full: the trainer may
    not even have been able to write its traceback."""
    try:
        free = shutil.disk_usage(paths.root).free
    except OSError:
        free = None
    if any(word in tail for word in DISK_FULL_WORDS) or (
            free is not None and free < DISK_FULL_FREE_BYTES):
        left = f" ({free / 2**20:.1f} MiB free now)" if free is not None else ""
        return f"no space left on device (ENOSPC): the disk holding the workspace is full{left};"
    return None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
        return f"the trainer was killed by {name}{hint}"
    return f"the trainer exited with code {code}"


class Supervisor:
    def __init__(self, cache_dir: Path, extra_env: dict[str, str] | None = None):
        self.cache_dir = cache_dir
        self.extra_env = extra_env or {}
        self.running: dict[str, TrainerProcess] = {}

    # ---- starting -------------------------------------------------------------------------------

    def launch(self, job: Job, paths: JobPaths, env: dict[str, str] | None = None) -> TrainerProcess:
        clear_requests(paths)
        paths.exit_record.unlink(missing_ok=True)
        if job.resume_from:
            step = int(job.resume_from.rsplit("-", 1)[1])
            truncate_after(paths.metrics, step)
        else:
            paths.metrics.unlink(missing_ok=True)  # a fresh start (or restart from scratch)
        paths.heartbeat.unlink(missing_ok=True)
        write_job_file(paths, job, self.cache_dir, job.resume_from)
        processes = int(job.config.get("gpus", 1))
        process_env = {**os.environ, **self.extra_env, **(env or {}), SUPERVISED_ENV: "1",
                       "PYTHONUNBUFFERED": "1",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR),
                                                                   os.environ.get("PYTHONPATH")]))}
        with open(paths.log, "ab") as log:
            log.write(f"\n==== attempt {job.attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      f"{' from ' + job.resume_from if job.resume_from else ''} ====\n".encode())
            log.flush()
            popen = subprocess.Popen(trainer_command(paths.job_file, processes), cwd=REPO_DIR,
                                     env=process_env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # own process group: survives the console
        trainer = TrainerProcess(job.job_id, paths, popen.pid, _timeout_s(job), time.time(), popen,
                                 processes=processes)
        self.running[job.job_id] = trainer
        return trainer

    def attach(self, job: Job, paths: JobPaths) -> TrainerProcess:
        """Follow a trainer started by an earlier console. If it is already gone, the next
        poll reaps it from its exit record (or reports it interrupted)."""
        alive = job.pid is not None and _is_alive(job.pid, paths)
        trainer = TrainerProcess(job.job_id, paths, job.pid or 0, _timeout_s(job),
                                 time.time(), alive_at_attach=alive,
                                 processes=int(job.config.get("gpus", 1)))
        self.running[job.job_id] = trainer
        for action in (PAUSE, CANCEL):  # requests made before the restart still stand
            if paths.request_file(action).exists():
                trainer.stop_action, trainer.stop_requested_at = action, time.time()
        return trainer

    # ---- control --------------------------------------------------------------------------------

    def request_stop(self, job_id: str, action: str, now: float | None = None) -> None:
        trainer = self.running[job_id]
        request(trainer.paths, action)
        if trainer.stop_action != CANCEL:  # a cancel is never downgraded to a pause
            trainer.stop_action = action
            trainer.stop_requested_at = time.time() if now is None else now

    def kill_all(self) -> None:
        for trainer in self.running.values():
            kill_trainer(trainer)

    # ---- following ------------------------------------------------------------------------------

    def progress(self, job_id: str) -> dict[str, Any] | None:
        trainer = self.running.get(job_id)
        if trainer is None:
            return None
        last = trainer.metrics.last or {}
        return {"step": max(last.get("step", 0), trainer.heartbeat.get("step") or 0),
                "total_steps": trainer.heartbeat.get("total_steps"),
                "phase": trainer.heartbeat.get("phase", "starting"), "loss": last.get("loss")}

    def metrics_log(self, job_id: str) -> MetricsLog | None:
        trainer = self.running.get(job_id)
        return trainer.metrics if trainer else None

    def poll(self, now: float | None = None) -> list[TrainerExit]:
        """One look at every running trainer. Never blocks."""
        now = time.time() if now is None else now
        exits = []
        for job_id, trainer in list(self.running.items()):
            trainer.metrics.refresh()
            self._read_heartbeat(trainer)
            if trainer.processes > 1:
                _note_descendants(trainer)
            code = trainer.poll_exit()
            killed_for = None
            if code is None:
                killed_for = self._enforce_limits(trainer, now)
                if killed_for is None:
                    continue
                code = self._reap_after_kill(trainer)
            trainer.metrics.refresh()
            kill_trainer(trainer)  # anything the trainer left behind
            finished = self._interpret(trainer, code, killed_for)
            finished.progress = self.progress(job_id)
            del self.running[job_id]
            exits.append(finished)
        return exits

    def _read_heartbeat(self, trainer: TrainerProcess) -> None:
        try:
            mtime = os.stat(trainer.paths.heartbeat).st_mtime
        except FileNotFoundError:
            return
        if mtime != trainer.heartbeat_mtime:
            trainer.heartbeat_mtime = mtime
            beat = read_json(trainer.paths.heartbeat)
            if beat:
                trainer.heartbeat = beat
                trainer.heartbeat_time = max(trainer.heartbeat_time, float(beat.get("time", 0)))

    def _enforce_limits(self, trainer: TrainerProcess, now: float) -> str | None:
        if now - trainer.last_progress_time() > trainer.timeout_s:
            kill_trainer(trainer)
            return "timeout"
        if (trainer.stop_action == CANCEL and trainer.stop_requested_at is not None
                and now - trainer.stop_requested_at > CANCEL_GRACE_S):
            kill_trainer(trainer)
            return "cancel"
        return None

    def _reap_after_kill(self, trainer: TrainerProcess) -> int:
        if trainer.popen is not None:
            try:
                return trainer.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return -signal.SIGKILL
        return -signal.SIGKILL

    def _interpret(self, trainer: TrainerProcess, code: int, killed_for: str | None) -> TrainerExit:
        job_id = trainer.job_id
        if killed_for == "timeout":
            minutes = trainer.timeout_s / 60
            return TrainerExit(job_id, JobStatus.FAILED, code,
                               f"timed out after {minutes:g} min without progress; the trainer was "
                               f"killed. Resume continues from the last checkpoint.\n"
                               f"{log_tail(trainer.paths)}".strip())
        if killed_for == "cancel" or code == EXIT_CANCELLED:
            return TrainerExit(job_id, JobStatus.CANCELLED, code)
        if code == EXIT_COMPLETED:
            return TrainerExit(job_id, JobStatus.COMPLETED, code)
        if code == EXIT_PAUSED:
            return TrainerExit(job_id, JobStatus.PAUSED, code)
        if trainer.stop_action == PAUSE and code < 0:
            # Killed while pausing: paused all the same, from the last complete checkpoint.
            return TrainerExit(job_id, JobStatus.PAUSED, code)
        tail = log_tail(trainer.paths)
        full = disk_full_note(trainer.paths, tail)
        if full:
            return TrainerExit(job_id, JobStatus.FAILED, code,
                               f"{full} {describe_exit(code)}. Free some space, then resume: it "
                               f"continues from the last complete checkpoint.\n{tail}".strip())
        if trainer.popen is None and trainer.recorded_exit() is None:
            cause = ("interrupted: the trainer stopped while the console was not running"
                     if not trainer.alive_at_attach else
                     "the trainer disappeared without an exit record (killed, or crashed hard)")
            return TrainerExit(job_id, JobStatus.FAILED, code,
                               f"{cause}. Resume continues from the last checkpoint.\n{tail}".strip())
        if code == EXIT_INVALID:
            errors = [line for line in tail.splitlines() if line.startswith("error:")]
            message = errors[-1][len("error:"):].strip() if errors else tail
            return TrainerExit(job_id, JobStatus.FAILED, code, message)
        return TrainerExit(job_id, JobStatus.FAILED, code, f"{describe_exit(code)}\n{tail}".strip())


def _note_descendants(trainer: TrainerProcess) -> None:
    try:
        for child in psutil.Process(trainer.pid).children(recursive=True):
            trainer.descendants.setdefault(child.pid, child.create_time())
    except psutil.NoSuchProcess:
        pass


def kill_trainer(trainer: TrainerProcess) -> None:
    if trainer.processes > 1:
        _note_descendants(trainer)  # ranks still running: they are torchrun's children now
    kill_group(trainer.pid)
    kill_descendants(trainer.descendants)


def _timeout_s(job: Job) -> float:
    return float(job.config.get("timeout_minutes", 10)) * 60
