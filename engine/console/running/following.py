"""Following running trainers without blocking: each tick reads what their files say (metrics,
heartbeat, micro-batch changes), enforces their limits (a silent heartbeat, a cancel's grace) and,
once one has ended, gathers the facts that explain how (engine.console.running.exits turns them
into a status and a message with the log's tail)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import MAX_BATCH
from engine.console.metrics.log import MetricsLog
from engine.console.records.job import JobStatus
from engine.console.running.exits import STATUS, ExitFacts, exit_cause, exit_message
from engine.console.running.trainers import Trainer
from engine.jobfiles import CANCEL, JobPaths, read_json

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


class TrainerFollower:
    """The running trainers, by job id, and one non-blocking look at all of them per `poll`."""

    def __init__(self) -> None:
        self.running: dict[str, Trainer] = {}
        self.on_change = lambda job_id: None  # told when what a running job's view shows changed
        self.on_micro_batch_lowered = lambda job_id: None
        self.started_at = time.time()

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
