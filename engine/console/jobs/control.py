"""What people do to jobs: check and submit, pause, cancel, resume (with changes), re-prioritise,
share and delete. Every action checks who asks (engine.console.people.access) and moves a job only
through the state machine (engine.job.change_status)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from engine import machine as machines
from engine.atomic import write_json_atomic
from engine.config import ConfigError, JobConfig, coerce_field, shorten
from engine.console.jobs.views import JobViews
from engine.console.people.access import Access
from engine.console.people.users import User
from engine.console.records.job import (
    IllegalTransition,
    Job,
    JobStatus,
    StatusListener,
    can_transition,
    change_status,
    new_job_id,
)
from engine.console.records.store import JobNotFound, JobStore, StorageError
from engine.console.records.workspace import Workspace
from engine.console.results.gates import Gates
from engine.console.results.zips import checkpoint_folder
from engine.console.running.devices import DevicePool
from engine.console.running.supervisor import Supervisor, write_job_file
from engine.jobfiles import CANCEL, PAUSE, JobPaths, checkpoint_step
from engine.presets import PresetLibrary
from engine.resolve import Resolution, resolve

log = logging.getLogger("traindeck.control")
# Resume keeps these as they were: the checkpoints only make sense with them.
CHECKPOINT_BOUND = ("method", "model", "dataset", "dataset_format", "adapter", "lora_r",
                    "lora_alpha", "lora_target_modules", "max_length", "packing")
# Changing these is allowed on request, but the run then differs from a straight one.
EXACTNESS_BOUND = ("per_device_train_batch_size", "gradient_accumulation_steps", "seed", "gpus")


def resume_point(paths: JobPaths, checkpoint: str | None) -> str | None:
    """The checkpoint a resume starts from: the one named, or the latest complete one."""
    if checkpoint:
        return checkpoint_folder(paths, checkpoint).name
    latest = paths.latest_checkpoint()
    return latest.name if latest else None


def check_ends_after(checkpoint: str | None, config: JobConfig) -> None:
    """A resume trains from its checkpoint to max_steps: one that ended before the checkpoint
    would have no step to train and a model from past its end."""
    step = checkpoint_step(checkpoint) or 0
    if 0 < config.max_steps < step:
        raise ConfigError(f"max_steps {config.max_steps} is before {checkpoint}: set max_steps to "
                          f"at least {step}, or resume from an earlier checkpoint")


def ask_once_released(store: JobStore, supervisor: Supervisor, job_id: str, action: str) -> None:
    """Ask a running trainer to pause or cancel once the store lock is released: the request is a
    file in the job folder, or a scancel, and every other user's call waits for that lock."""
    store.lock.after_release(partial(supervisor.request_stop, job_id, action))


def prepare_job(workspace: Workspace, store: JobStore, user: User, resolution: Resolution,
                sweep: dict[str, Any] | None) -> Job:
    """A new job and its folder: job.yaml and a copy of its record, what `repair-db` rebuilds it
    from. Its submit order (seq) is given when it is stored; until its first status change the
    folder's copy says 0, and repair orders such jobs by their creation time."""
    settings, now = resolution.config, time.time()
    job = Job(job_id=new_job_id(now),
              name=settings.name or f"{settings.preset} {time.strftime('%H:%M:%S')}",
              config=settings, owner=user.name, priority=settings.priority, created_at=now,
              queued_at=now, resolved=resolution.resolved, sweep=sweep)
    while _stored(store, job.job_id) or not _made_new(workspace.job_paths(job.job_id)):
        job.job_id = new_job_id(now)
    paths = workspace.job_paths(job.job_id)
    try:
        write_job_file(paths, job, workspace.cache_dir, None)
        write_json_atomic(paths.record, job.to_dict())
    except BaseException:
        shutil.rmtree(paths.root, ignore_errors=True)
        raise
    return job


def remove_unqueued(store: JobStore, workspace: Workspace, jobs: list[Job], stored: int) -> None:
    """After an enqueue failed part-way: the jobs already stored leave the store again and every
    folder goes, so that "nothing was queued" holds (best effort: the disk that refused one
    write may refuse these too; a job that stays keeps its folder)."""
    kept = set()
    with store.lock:
        for job in jobs[:stored]:
            try:
                store.delete(job.job_id)
            except (OSError, JobNotFound) as exc:
                log.error("job %s: stored by a failed submit, cannot be removed: %s",
                          job.job_id, exc)
                kept.add(job.job_id)
    for job in jobs:
        if job.job_id not in kept:
            shutil.rmtree(workspace.job_paths(job.job_id).root, ignore_errors=True)


def _stored(store: JobStore, job_id: str) -> bool:
    try:
        store.get(job_id)
        return True
    except JobNotFound:
        return False


def _made_new(paths: JobPaths) -> bool:
    """Whether the job's folder was made now (not there before): two submits never share one."""
    try:
        paths.root.mkdir(parents=True)
        return True
    except FileExistsError:
        return False


class JobControl:
    def __init__(self, store: JobStore, access: Access, views: JobViews, presets: PresetLibrary,
                 machine: machines.Machine, workspace: Workspace, supervisor: Supervisor,
                 devices: DevicePool, gates: Gates, listeners: list[StatusListener],
                 wake: Callable[[], None] = lambda: None, base_dir: Path | None = None):
        self.store, self.access, self.views = store, access, views
        self.presets, self.machine, self.workspace = presets, machine, workspace
        self.supervisor, self.devices, self.gates = supervisor, devices, gates
        self.listeners = listeners
        self.wake = wake  # the scheduler's: run a round now rather than at the next tick
        self.base_dir = base_dir

    # ---- checking and submitting ----------------------------------------------------------------

    def validate(self, user: User, config: dict[str, Any] | None) -> Resolution:
        """Resolve a submission for `user` without queueing it."""
        return resolve(config, self.presets, self.machine, self.base_dir,
                       rules=self.access.source_rules(user))

    def check(self, user: User, config: dict[str, Any] | None) -> Resolution:
        """Every rule of a submit, without queueing: the config, its whole dataset (in a slot for
        heavy work), and what `user` may run and hold now."""
        with self.gates.check.slot(user.name):
            resolution = self.validate(user, config)
        self.access.check_may_run(resolution.config, user, self.devices)
        self.access.check_holdings(user, self.store.all(copy=False))
        return resolution

    def submit(self, user: User, config: dict[str, Any] | None) -> dict[str, Any]:
        """Queue a job for `user`, within their quotas."""
        return self.enqueue(user, self.check(user, config))

    def enqueue(self, user: User, resolution: Resolution) -> dict[str, Any]:
        """Queue a config `check` passed for `user`, within their quotas."""
        [queued] = self.enqueue_all(user, [(resolution, None)])
        return queued

    def enqueue_all(self, user: User, runs: list[tuple[Resolution, dict[str, Any] | None]]
                    ) -> list[dict[str, Any]]:
        """Queue configs `check` passed (each with the sweep it is a run of, or None), all or
        none, within `user`'s quotas. The folders are written first, outside the store lock: a
        slow disk holds up no other user's call."""
        jobs: list[Job] = []
        stored = 0
        try:
            for resolution, sweep in runs:
                jobs.append(prepare_job(self.workspace, self.store, user, resolution, sweep))
            with self.store.lock:
                # Under the lock: jobs queued since the check count too, and none slips in.
                self.access.check_holdings(user, self.store.all(copy=False), len(jobs))
                for job in jobs:
                    job.seq = self.store.next_seq()
                    self.store.add(job)
                    stored += 1
                positions = [self.views.position(job.job_id) for job in jobs]
        except BaseException as exc:
            remove_unqueued(self.store, self.workspace, jobs, stored)
            if isinstance(exc, OSError):
                raise StorageError(f"could not store the job ({exc.strerror or exc}); nothing "
                                   f"was queued") from None
            raise
        self.wake()
        return [{"job_id": job.job_id, "status": job.status, "position": position}
                for job, position in zip(jobs, positions, strict=True)]

    def keep_record(self, job: Job, previous: str | None = None) -> None:
        """Each job folder keeps a copy of its record, so `repair-db` can rebuild the database
        from the folders alone. Best effort: a full disk must not fail a status change."""
        try:
            write_json_atomic(self.workspace.job_paths(job.job_id).record, job.to_dict())
        except OSError as exc:
            log.warning("job %s: cannot keep its record in its folder: %s", job.job_id, exc)

    # ---- stopping and resuming ------------------------------------------------------------------

    def pause(self, user: User, job_id: str) -> dict[str, Any]:
        return self._stop(job_id, PAUSE, user)

    def cancel(self, user: User, job_id: str) -> dict[str, Any]:
        return self._stop(job_id, CANCEL, user)

    def _stop(self, job_id: str, action: str, user: User) -> dict[str, Any]:
        target = JobStatus.CANCELLED if action == CANCEL else JobStatus.PAUSED
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, action)
            if job.status == JobStatus.RUNNING and job.job_id in self.supervisor.running:
                ask_once_released(self.store, self.supervisor, job.job_id, action)
                if job.requested != CANCEL:
                    # A person's pause overrides a preemption's: no automatic resume after it.
                    job = self.store.update(job.job_id, requested=action, preempted_by=None)
            elif can_transition(job.status, target):
                job = change_status(self.store, job.job_id, target, self.listeners)
            else:
                raise IllegalTransition(job.job_id, job.status, target.value)
        self.wake()
        return self.views.summary(job)

    def resume(self, user: User, job_id: str, checkpoint: str | None = None,
               changes: dict[str, Any] | None = None,
               allow_inexact: bool = False) -> dict[str, Any]:
        """Queue a paused, failed or cancelled job again (same id) from `checkpoint` or its latest
        complete one. `changes` edits the config first, through the same resolution as a submit;
        a change that would make the resumed run differ from a straight one is refused unless
        `allow_inexact`."""
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, "resume")
            if not can_transition(job.status, JobStatus.QUEUED):
                raise IllegalTransition(job.job_id, job.status, JobStatus.QUEUED.value)
            name = resume_point(self.workspace.job_paths(job.job_id), checkpoint)
            fields: dict[str, Any] = {"resume_from": name}
            if changes:
                resolution = self._changed(job, changes, allow_inexact or name is None)
                fields.update(config=resolution.config, priority=resolution.config.priority,
                              resolved={**job.resolved, **resolution.resolved})
                self.access.check_may_run(resolution.config, self.access.owner_of(job),
                                          self.devices)
            check_ends_after(name, fields.get("config", job.config))
            self.access.check_queue_quota(self.access.owner_of(job),
                                          self.store.all((JobStatus.QUEUED.value,)))
            job = change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, **fields)
        self.wake()
        return self.views.summary(job)

    def _changed(self, job: Job, changes: Any, allow_inexact: bool) -> Resolution:
        if not isinstance(changes, dict):
            raise ConfigError("changes must be an object of field: value")
        if "preset" in changes:
            raise ConfigError("cannot change preset on resume; change the fields themselves")
        owner = self.access.owner_of(job)
        resolution = resolve(changes, self.presets, self.machine, self.base_dir, check_data=False,
                             rules=self.access.source_rules(owner), base=job.config)
        new = resolution.config
        frozen = [k for k in CHECKPOINT_BOUND if getattr(new, k) != getattr(job.config, k)]
        if frozen:
            raise ConfigError(f"cannot change {', '.join(frozen)} on resume: the checkpoints were "
                              f"made with the job's values; submit a new job instead")
        inexact = [k for k in EXACTNESS_BOUND if getattr(new, k) != getattr(job.config, k)]
        if inexact and not allow_inexact:
            raise ConfigError(f"changing {', '.join(inexact)} on resume breaks exact continuation "
                              f"(the resumed run would differ from a straight one); pass "
                              f"allow_inexact to do it anyway")
        return resolution

    # ---- priority, sharing, deleting ------------------------------------------------------------

    def set_priority(self, user: User, job_id: str, priority: Any) -> dict[str, Any]:
        """Reorder the queue: higher starts first. Running jobs keep their place on the device;
        the new priority counts when they are queued again (and for preemption)."""
        priority = coerce_field("priority", priority)  # the schema's bounds, as at submit
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, "re-prioritise")
            if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
                raise ConfigError(f"job {job.job_id} is {job.status}: its priority no longer "
                                  f"matters")
            job = self.store.update(job.job_id, priority=priority,
                                    config=job.config.replace(priority=priority))
        self.keep_record(job)
        self.wake()
        return {**self.views.summary(job), "position": self.views.position(job.job_id)}

    def share(self, user: User, job_id: str, shared: Any) -> dict[str, Any]:
        """Let every user try this job's model, download it and train on it (or stop that)."""
        if not isinstance(shared, bool):
            raise ConfigError(f"shared must be true or false, got {shorten(shared)}")
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, "share")
            job = self.store.update(job.job_id, shared=shared)
        self.keep_record(job)
        return self.views.summary(job)

    def delete(self, user: User, job_id: str) -> dict[str, Any]:
        """Remove a job that is not queued or running: its record and its folder."""
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, "delete")
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                raise ConfigError(f"job {job.job_id} is {job.status}; cancel it before deleting it")
            self.store.delete(job.job_id)
        shutil.rmtree(self.workspace.job_paths(job.job_id).root, ignore_errors=True)
        self.views.forget(job.job_id)
        return {"job_id": job.job_id, "deleted": True}
