"""The job model and its state machine: statuses, the transition table, and `change_status`, the
one function that moves a job from one status to another."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol


class JobStatus(str, Enum):
    """Stored as plain lowercase strings, which compare equal to these members."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.PAUSED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED}
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),  # resume from a checkpoint
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),  # resume from a checkpoint
    JobStatus.COMPLETED: frozenset(),
}

ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


def is_terminal(status: str) -> bool:
    return JobStatus(status) in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def is_resumable(status: str) -> bool:
    return JobStatus.QUEUED in TRANSITIONS[JobStatus(status)]


def can_transition(current: str, target: str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


class IllegalTransition(ValueError):
    def __init__(self, job_id: str, current: str, target: str):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[JobStatus(current)])) or "none"
        super().__init__(
            f"job {job_id} is {current}; it cannot become {target} (from {current}: {allowed})"
        )
        self.current, self.target = current, target


def new_job_id(now: float | None = None) -> str:
    """Sortable by submit time and readable in a folder listing: 20261129-232501-3f9a."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass
class Job:
    job_id: str
    name: str
    config: dict[str, Any]
    owner: str = "local"
    priority: int = 0
    status: str = JobStatus.QUEUED.value
    seq: int = 0  # submit order, the tie-break after priority
    created_at: float = field(default_factory=time.time)
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    paused_at: float | None = None
    pid: int | None = None
    attempt: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    requested: str | None = None  # "pause" or "cancel" while a running trainer is asked to stop
    resume_from: str | None = None  # checkpoint name the next attempt starts from
    preempted_by: str | None = None  # paused to make room for this job; re-queued when paused
    last_checkpoint: str | None = None
    progress: dict[str, Any] = field(default_factory=lambda: {"step": 0, "total_steps": None})
    resolved: dict[str, Any] = field(default_factory=dict)  # fields that were `auto`, and their values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class JobRecords(Protocol):
    """What `change_status` needs of a store (see engine.store)."""

    lock: Any

    def get(self, job_id: str) -> Job: ...

    def update(self, job_id: str, **fields: Any) -> Job: ...


StatusListener = Callable[[Job, str], None]


def change_status(
    store: JobRecords,
    job_id: str,
    target: str,
    listeners: list[StatusListener] | tuple = (),
    now: float | None = None,
    **fields: Any,
) -> Job:
    """Move a job to `target`, refusing illegal moves; stamp the time fields, save, and notify.

    Listeners get the saved job and its previous status; they run after the store lock is released
    so a slow one cannot stall other writers.
    """
    now = time.time() if now is None else now
    target = JobStatus(target).value
    with store.lock:
        job = store.get(job_id)
        previous = job.status
        if not can_transition(previous, target):
            raise IllegalTransition(job_id, previous, target)
        stamps: dict[str, Any] = {}
        if target == JobStatus.QUEUED:
            stamps.update(queued_at=now, finished_at=None, paused_at=None, error=None, requested=None,
                          pid=None, exit_code=None)
        elif target == JobStatus.RUNNING:
            stamps.update(started_at=now, finished_at=None, requested=None)
        elif target == JobStatus.PAUSED:
            stamps.update(paused_at=now, requested=None, pid=None)
        else:
            stamps.update(finished_at=now, requested=None, pid=None)
        stamps.update(fields)
        job = store.update(job_id, status=target, **stamps)
    for listener in listeners:
        listener(job, previous)
    return job
