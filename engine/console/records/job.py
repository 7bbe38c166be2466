"""The job model and its state machine: statuses, the transition table, and `change_status`, the
one function that moves a job from one status to another."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
)

from engine.config import JobConfig
from engine.console.records.jsonsafe import made_safe, unsafe_parts
from engine.schema import describe_errors


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


JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # it names the job's folder


def _read_config(value: Any, info: ValidationInfo) -> JobConfig | dict[str, Any]:
    """A record's config: stored as a dict, read back into the typed config (known fields;
    checking them was resolve()'s job when the job was submitted). A record only checked, never
    used (CHECK_ONLY), keeps the dict: building the config is most of a record's reading time."""
    if isinstance(value, JobConfig):
        return value
    if isinstance(value, dict):
        return value if info.context is CHECK_ONLY else JobConfig.from_dict(value)
    raise ValueError("must be a mapping of config fields")


CHECK_ONLY: dict[str, Any] = {}  # the validation context of a record checked and dropped
StoredConfig = Annotated[JobConfig, PlainValidator(_read_config),
                         PlainSerializer(lambda config: config.to_dict())]
Timestamp = float  # seconds since the epoch (time.time())
Priority = Annotated[int, Field(ge=-2**31, le=2**31)]


class Job(BaseModel):
    """A job's stored record. Stored records are plain JSON (`to_dict`); reading one back
    (`from_dict`) checks every field's type. Keys this version does not know (a newer version's,
    after a downgrade, or a retired field) are ignored rather than refused: they are no reason to
    lose a job, and the store leaves them on disk untouched (it updates records in place)."""

    model_config = ConfigDict(strict=True, extra="ignore", use_enum_values=True)

    job_id: str = Field(pattern=JOB_ID.pattern,
                        description="a folder name (letters, digits, _ . -; at most 64)")
    name: str
    config: StoredConfig
    owner: str = "local"
    priority: Priority = 0
    status: JobStatus = Field(JobStatus.QUEUED.value, strict=False)  # stored as the plain value
    seq: int = Field(0, ge=0)  # submit order, the tie-break after priority
    created_at: Timestamp = Field(default_factory=time.time)
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    paused_at: Timestamp | None = None
    pid: int | None = None
    attempt: int = Field(0, ge=0)
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    # Set while a running trainer is asked to stop.
    requested: Literal["pause", "cancel"] | None = None
    resume_from: str | None = None  # checkpoint name the next attempt starts from
    preempted_by: str | None = None  # paused to make room for this job; re-queued when paused
    last_checkpoint: str | None = None
    progress: dict[str, Any] = Field(default_factory=lambda: {"step": 0, "total_steps": None})
    resolved: dict[str, Any] = Field(default_factory=dict)  # fields that were `auto`: values
    shared: bool = False  # its owner lets every user try it and train on its model
    # Micro-batch changes the trainer made after running out of GPU memory (from microbatch.json).
    microbatch_changes: list[dict[str, Any]] = Field(default_factory=list)
    # On a cluster: the scheduler's id for the current attempt ({"id": "123"}); None locally.
    cluster_job: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None  # one run of a sweep: {id, name, values}
    notify_error: str | None = None  # the last notification that could not be delivered
    damaged: str | None = None  # what was wrong with the stored record (read back made safe)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls.model_validate(data)


# What a damaged record's unreadable fields become when it is read made safe; the other fields
# take their defaults.
_FALLBACKS: dict[str, Any] = {"name": "", "config": {}, "status": JobStatus.FAILED.value}
# A valid record, under fields about to be stored, so that only those fields are checked.
_ANY_RECORD: dict[str, Any] = {"job_id": "any", "name": "", "config": JobConfig()}


def _schema_problems(data: dict[str, Any]) -> list[str]:
    try:
        Job.model_validate(data, context=CHECK_ONLY)
    except ValidationError as exc:
        return describe_errors(exc, None, Job)
    return []


def field_problems(fields: dict[str, Any]) -> list[str]:
    """What is wrong with fields about to be stored in a record (empty: nothing)."""
    return _schema_problems({**_ANY_RECORD, **fields})


def record_problems(data: Any) -> list[str]:
    """What is wrong with a stored job record (empty: nothing). A record whose job_id cannot name
    a folder is unusable; other problems are repaired on reading (see `readable_record`)."""
    if not isinstance(data, dict):
        return [f"not an object but a {type(data).__name__}"]
    return _schema_problems(data) + unsafe_parts({k: v for k, v in data.items() if k != "damaged"})


def readable_record(data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """A damaged record made safe to read, list and show: bad fields fall back to their
    defaults, unreadable values become text, and `damaged` says what was wrong. It is never
    started (the scheduler skips damaged jobs); its owner or an admin can cancel or delete it."""
    fixed = made_safe(data)
    try:
        Job.model_validate(fixed, context=CHECK_ONLY)
    except ValidationError as exc:
        for name in {str(error["loc"][0]) for error in exc.errors() if error["loc"]}:
            default = Job.model_fields[name].get_default(call_default_factory=True)
            fixed[name] = _FALLBACKS.get(name, default)
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
