"""Follows running trainers: launches them in their own process group, tails their metrics,
watches their heartbeat, delivers pause/cancel requests, and turns each exit into a final status.

Modelled on a work-horse monitor: wait without blocking, kill the whole process group after a
grace period or a silent heartbeat, and explain every failure with its cause and the log's tail
(engine.console.running.exits decides which, from the facts gathered here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import REPO_DIR
from engine.atomic import write_atomic
from engine.config import MAX_BATCH
from engine.console.metrics.log import MetricsLog
from engine.console.records.job import Job, JobStatus
from engine.console.running.exits import STATUS, ExitFacts, exit_cause, exit_message
from engine.console.running.spares import PER_JOB_ENV, Spares
from engine.console.running.trainers import (
    AttachedTrainer,
    ChildTrainer,
    ForkedTrainer,
    TorchrunTrainer,
    Trainer,
    is_alive,
)
from engine.jobfiles import (
    CANCEL,
    PAUSE,
    SUPERVISED_ENV,
    JobPaths,
    checkpoint_step,
    clear_requests,
    read_json,
    request,
    truncate_after,
)

CANCEL_GRACE_S = 10.0  # a cancel honoured at the next step boundary; then the group is killed
LOG_TAIL_LINES = 15
LOG_NOISE = ("Failed to load CPU gemm_4bit_forward",)  # harmless bitsandbytes notice on CPUs
DISK_FULL_FREE_BYTES = 16 << 20
DISK_FULL_WORDS = ("No space left on device", "Errno 28", "ENOSPC")


@dataclass
class TrainerExit:
    job_id: str
    status: str
    exit_code: int | None
    error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)


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
    document = {"job_id": job.job_id, "name": job.name, "config": job.config.to_dict(),
                "resume_from": resume_from, "cache_dir": str(cache_dir),
                "owner": job.owner, "priority": job.priority, "seq": job.seq,
                "created_at": job.created_at, "shared": job.shared, "sweep": job.sweep,
                # the workspace's: the trackers' shared stores (MLflow, Trackio)
                "tracking_dir": str(cache_dir.parent / "tracking")}
    write_atomic(paths.job_file, yaml.safe_dump(document, sort_keys=False))


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


def microbatch_changes(paths: JobPaths) -> list[dict[str, Any]]:
    """What the trainer wrote to microbatch.json, checked: each change's sizes are bounded
    whole numbers (they become the job's config)."""
    found = []
    for change in (read_json(paths.microbatch) or {}).get("changes", []):
        sizes = change.get("to") if isinstance(change, dict) else None
        if isinstance(sizes, dict) and all(
                isinstance(sizes.get(k), int) and 1 <= sizes[k] <= MAX_BATCH
                for k in ("per_device_train_batch_size", "gradient_accumulation_steps")):
            found.append(change)
    return found


def changed_since(path: Path, mtime: float) -> float | None:
    """The file's new mtime if it changed since `mtime` (None: unchanged or absent): a stat per
    tick, a read only when there is something new."""
    try:
        current = os.stat(path).st_mtime
    except FileNotFoundError:
        return None
    return current if current != mtime else None


def free_mib(paths: JobPaths) -> float | None:
    try:
        return shutil.disk_usage(paths.root).free / 2**20
    except OSError:
        return None


def trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every trainer starts with (a job adds its own devices to it)."""
    path = os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
            # Asking torch whether there is a GPU then asks NVML, without initialising CUDA: a
            # spare trainer must leave CUDA alone until it knows its devices.
            "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


class Supervisor:
    def __init__(self, cache_dir: Path, extra_env: dict[str, str] | None = None,
                 warm_start: bool = True):
        self.cache_dir = cache_dir
        self.extra_env = extra_env or {}
        self.running: dict[str, Trainer] = {}
        self.spares = Spares(cache_dir / "spares", enabled=warm_start)
        self.on_change = lambda job_id: None  # told when what a running job's view shows changed
        self.on_micro_batch_lowered = lambda job_id: None
        self.started_at = time.time()

    def keep_spare(self) -> None:
        """Have a spare trainer ready for the next job (warm start)."""
        self.spares.start({k: v for k, v in trainer_env(self.extra_env).items()
                           if k not in PER_JOB_ENV})

    # ---- starting -------------------------------------------------------------------------------

    def start_delay(self, job: Job, now: float) -> str | None:
        """Why the job should not start just yet (None: it can start now)."""
        if job.config.gpus * job.config.nodes != 1:
            return None  # torchrun's ranks always start fresh
        waited = self.spares.importing(trainer_env(self.extra_env), now)
        if waited is None:
            return None
        return f"the warm trainer is importing its libraries ({waited:.0f} s so far)"

    def prepare(self, job: Job, paths: JobPaths) -> None:
        """The job folder as a new attempt finds it: no old requests, exit record or heartbeat,
        metrics up to the checkpoint it resumes from, and its job file."""
        clear_requests(paths)
        paths.exit_record.unlink(missing_ok=True)
        if job.resume_from:
            truncate_after(paths.metrics, checkpoint_step(job.resume_from) or 0)
        else:
            paths.metrics.unlink(missing_ok=True)  # a fresh start (or restart from scratch)
        paths.heartbeat.unlink(missing_ok=True)
        write_job_file(paths, job, self.cache_dir, job.resume_from)

    def launch(self, job: Job, paths: JobPaths, env: dict[str, str] | None = None) -> Trainer:
        self.prepare(job, paths)
        processes = job.config.gpus
        process_env = {**trainer_env(self.extra_env), **(env or {})}
        command = trainer_command(paths.job_file, processes)
        with open(paths.log, "ab") as log:
            log.write(f"\n==== attempt {job.attempt} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      f"{' from ' + job.resume_from if job.resume_from else ''} ====\n".encode())
            log.flush()
            # One process: a copy of the spare trainer takes the job if it can (warm start);
            # torchrun's ranks, or anything the spare cannot serve exactly, start fresh.
            pid = self.spares.take(command, process_env, paths.log) if processes == 1 else None
            if pid is None:
                popen = subprocess.Popen(command, cwd=REPO_DIR, env=process_env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)  # own group: outlives the console
        timeout_s = job.config.timeout_minutes * 60
        if pid is not None:
            trainer = ForkedTrainer(job.job_id, paths, pid, timeout_s, time.time(),
                                    spares=self.spares)
        else:
            kind = TorchrunTrainer if processes > 1 else ChildTrainer
            trainer = kind(job.job_id, paths, popen.pid, timeout_s, time.time(),
                           processes=processes, popen=popen)
        self.running[job.job_id] = trainer
        return trainer

    def attach(self, job: Job, paths: JobPaths) -> Trainer:
        """Follow a trainer started by an earlier console. If it is already gone, the next
        poll reaps it from its exit record (or reports it interrupted)."""
        alive = job.pid is not None and is_alive(job.pid, paths)
        trainer = AttachedTrainer(job.job_id, paths, job.pid or 0, job.config.timeout_minutes * 60,
                                  time.time(), processes=job.config.gpus, alive_at_attach=alive)
        self.running[job.job_id] = trainer
        for action in (PAUSE, CANCEL):  # requests made before the restart still stand
            if paths.request_file(action).exists():
                trainer.stop_action, trainer.stop_requested_at = action, time.time()
        return trainer

    # ---- control --------------------------------------------------------------------------------

    def request_stop(self, job_id: str, action: str, now: float | None = None) -> None:
        """Ask a running trainer to pause or cancel (nothing to ask once it has ended)."""
        trainer = self.running.get(job_id)
        if trainer is None:
            return
        request(trainer.paths, action)
        if trainer.stop_action != CANCEL:  # a cancel is never downgraded to a pause
            trainer.stop_action = action
            trainer.stop_requested_at = time.time() if now is None else now

    def withdraw(self, job_id: str) -> None:
        """Stop following and kill a trainer just started for a job that no longer wants it
        (cancelled or paused while it started): it has trained nothing yet."""
        trainer = self.running.pop(job_id, None)
        if trainer is not None:
            trainer.kill()
            trainer.reap_after_kill()

    def kill_all(self) -> None:
        for trainer in self.running.values():
            trainer.kill()

    # ---- following ------------------------------------------------------------------------------

    def progress(self, job_id: str) -> dict[str, Any] | None:
        trainer = self.running.get(job_id)
        if trainer is None:
            return None
        last = trainer.metrics.last or {}
        return {"step": max(last.get("step", 0), trainer.heartbeat.get("step") or 0),
                "total_steps": trainer.heartbeat.get("total_steps"),
                "phase": trainer.heartbeat.get("phase", "starting"), "loss": last.get("loss"),
                "microbatch_changes": trainer.microbatch_changes}

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
            self._read_microbatch(trainer)
            self._note_change(trainer)
            trainer.note_processes()
            code = trainer.poll_exit()
            killed_for = None
            if code is None:
                killed_for = self._enforce_limits(trainer, now)
                if killed_for is None:
                    continue
                code = trainer.reap_after_kill()
            trainer.metrics.refresh()
            trainer.kill()  # anything the trainer left behind
            finished = self._interpret(trainer, code, killed_for)
            finished.progress = self.progress(job_id)
            del self.running[job_id]
            exits.append(finished)
        return exits

    def _note_change(self, trainer: Trainer) -> None:
        try:
            log_size = os.stat(trainer.paths.log).st_size
        except OSError:
            log_size = None
        shown = (trainer.metrics.size, trainer.heartbeat.get("step"),
                 trainer.heartbeat.get("phase"), len(trainer.microbatch_changes), log_size)
        if shown != trainer.shown:
            trainer.shown = shown
            self.on_change(trainer.job_id)

    def _read_heartbeat(self, trainer: Trainer) -> None:
        mtime = changed_since(trainer.paths.heartbeat, trainer.heartbeat_mtime)
        if mtime is not None:
            trainer.heartbeat_mtime = mtime
            beat = read_json(trainer.paths.heartbeat)
            if beat:
                trainer.heartbeat = beat
                trainer.heartbeat_time = max(trainer.heartbeat_time, float(beat.get("time", 0)))

    def _read_microbatch(self, trainer: Trainer) -> None:
        """The micro-batch changes the trainer made after running out of GPU memory."""
        mtime = changed_since(trainer.paths.microbatch, trainer.microbatch_mtime)
        if mtime is not None:
            trainer.microbatch_mtime = mtime
            before = len(trainer.microbatch_changes)
            trainer.microbatch_changes = microbatch_changes(trainer.paths)
            changes = trainer.microbatch_changes
            # Only news: a console that re-attaches finds earlier changes already told.
            if len(changes) > before and changes[-1].get("time", 0) > self.started_at:
                self.on_micro_batch_lowered(trainer.job_id)

    def _enforce_limits(self, trainer: Trainer, now: float) -> str | None:
        if now - trainer.last_progress_time() > trainer.timeout_s:
            trainer.kill()
            return "timeout"
        if (trainer.stop_action == CANCEL and trainer.stop_requested_at is not None
                and now - trainer.stop_requested_at > CANCEL_GRACE_S):
            trainer.kill()
            return "cancel"
        return None

    def _interpret(self, trainer: Trainer, code: int, killed_for: str | None) -> TrainerExit:
        tail = log_tail(trainer.paths)
        free = free_mib(trainer.paths)
        facts = ExitFacts(code=code, killed_for=killed_for, stop_action=trainer.stop_action,
                          recorded=trainer.has_exit_record(), attached=trainer.attached,
                          alive_at_attach=trainer.alive_at_attach,
                          cluster_reason=trainer.cluster_reason(), notice=trainer.notice(),
                          disk_full=any(word in tail for word in DISK_FULL_WORDS)
                          or (free is not None and free < DISK_FULL_FREE_BYTES / 2**20))
        cause = exit_cause(facts)
        status = STATUS.get(cause, JobStatus.FAILED)
        error = exit_message(cause, facts, tail, trainer.timeout_s, free)
        return TrainerExit(trainer.job_id, status.value, code, error)
