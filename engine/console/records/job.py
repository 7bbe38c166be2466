"""The job model and its state machine: statuses, the transition table, and `change_status`, the
one function that moves a job from one status to another."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Protocol

from engine.config import JobConfig
from engine.console.records.jsonsafe import made_safe, unsafe_parts


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


def can_transition(current: str, target: str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


def available_actions(status: str, requested: str | None = None) -> frozenset[str]:
    """What a person may do to a job in `status` (with a pause or cancel already `requested`),
    read off the transition table: pause, resume, cancel, delete."""
    current = JobStatus(status)
    allowed = TRANSITIONS[current]
    actions = set()
    if JobStatus.PAUSED in allowed and not requested:
        actions.add("pause")
    if JobStatus.QUEUED in allowed:
        actions.add("resume")
    if JobStatus.CANCELLED in allowed and requested != "cancel":
        actions.add("cancel")
    if current not in ACTIVE_STATUSES:
        actions.add("delete")
    return frozenset(actions)


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
    config: JobConfig
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
    # The fields that were `auto`, and the values chosen for them.
    resolved: dict[str, Any] = field(default_factory=dict)
    shared: bool = False  # its owner lets every user try it and train on its model
    # Micro-batch changes the trainer made after running out of GPU memory (from microbatch.json).
    microbatch_changes: list[dict[str, Any]] = field(default_factory=list)
    # On a cluster: the scheduler's id for the current attempt ({"id": "123"}); None locally.
    cluster_job: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None  # one run of a sweep: {id, name, values}
    notify_error: str | None = None  # the last notification that could not be delivered
    damaged: str | None = None  # what was wrong with the stored record (read back made safe)

    def __post_init__(self) -> None:
        if isinstance(self.config, dict):  # as stored: read back into the typed config
            self.config = JobConfig.from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # it names the job's folder
_NUMBER = (int, float)
# Each stored field, the types it may hold, and whether None is allowed.
RECORD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False), "config": ((dict,), False), "owner": ((str,), False),
    "priority": ((int,), False), "seq": ((int,), False), "created_at": (_NUMBER, False),
    "queued_at": (_NUMBER, True), "started_at": (_NUMBER, True), "finished_at": (_NUMBER, True),
    "paused_at": (_NUMBER, True), "pid": ((int,), True), "attempt": ((int,), False),
    "attempts": ((list,), False), "exit_code": ((int,), True), "error": ((str,), True),
    "requested": ((str,), True), "resume_from": ((str,), True), "preempted_by": ((str,), True),
    "last_checkpoint": ((str,), True), "progress": ((dict,), False), "resolved": ((dict,), False),
    "shared": ((bool,), False), "microbatch_changes": ((list,), False),
    "cluster_job": ((dict,), True), "sweep": ((dict,), True),
    "notify_error": ((str,), True),
}


def record_problems(data: Any) -> list[str]:
    """What is wrong with a stored job record (empty: nothing). A record whose job_id cannot name
    a folder is unusable; other problems are repaired on reading (see `readable_record`)."""
    if not isinstance(data, dict):
        return [f"not an object but a {type(data).__name__}"]
    problems = []
    if not isinstance(data.get("job_id"), str) or not JOB_ID.match(data["job_id"]):
        problems.append("job_id: missing or not a folder name")
    if data.get("status") not in {s.value for s in JobStatus}:
        problems.append(f"status: not one of {', '.join(s.value for s in JobStatus)}")
    for name, (types, nullable) in RECORD_FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        if value is None and nullable:
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            problems.append(f"{name}: a {type(value).__name__} where {types[0].__name__} belongs")
    problems += unsafe_parts({k: v for k, v in data.items() if k != "damaged"})
    if isinstance(data.get("priority"), int) and 2**31 < abs(data["priority"]) <= 2**63:
        problems.append("priority: out of range")
    return problems


def readable_record(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """A damaged record made safe to read, list and show: bad fields fall back to their
    defaults, unreadable values become text, and `damaged` says what was wrong. It is never
    started (the scheduler skips damaged jobs); its owner or an admin can cancel or delete it."""
    defaults = Job(job_id="", name="", config=JobConfig()).to_dict()
    fixed = made_safe(data)
    for name, (types, nullable) in RECORD_FIELDS.items():
        value = fixed.get(name, defaults[name])
        if not (value is None and nullable) and (
                not isinstance(value, types) or isinstance(value, bool) and bool not in types):
            fixed[name] = defaults[name]
    if isinstance(fixed.get("priority"), int) and abs(fixed["priority"]) > 2**31:
        fixed["priority"] = 0
    if fixed.get("status") not in {s.value for s in JobStatus}:
        fixed["status"] = JobStatus.FAILED.value
    fixed["damaged"] = "; ".join(problems)[:500]
    return fixed


class JobRecords(Protocol):
    """What `change_status` needs of a store (see engine.console.records.store)."""

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

    Listeners get the saved job and its previous status; they run once the store lock is released
    (by the outermost holder, when the caller holds it too), so a slow one cannot stall others.
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
            stamps.update(queued_at=now, finished_at=None, paused_at=None, error=None,
                          requested=None, pid=None, exit_code=None)
        elif target == JobStatus.RUNNING:
            stamps.update(started_at=now, finished_at=None, requested=None)
        elif target == JobStatus.PAUSED:
            stamps.update(paused_at=now, requested=None, pid=None)
        else:
            stamps.update(finished_at=now, requested=None, pid=None)
        stamps.update(fields)
        job = store.update(job_id, status=target, **stamps)
        store.lock.after_release(lambda: tell_listeners(listeners, job, previous))
    return job


def tell_listeners(listeners: list[StatusListener] | tuple, job: Job, previous: str) -> None:
    for listener in listeners:
        listener(job, previous)
