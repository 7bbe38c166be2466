"""What people do to jobs: check and submit, pause, cancel, resume (with changes), re-prioritise,
share and delete. Every action checks who asks (engine.console.people.access) and moves a job only
through the state machine (engine.console.records.job.change_status). Queueing new jobs is
engine.console.jobs.submission's part, resuming with changes engine.console.jobs.resume's."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from engine import machine as machines
from engine.atomic import write_json_atomic
from engine.config import ConfigError, coerce_field, shorten
from engine.console.jobs.resume import Resumer
from engine.console.jobs.submission import Enqueuer
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
)
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.results.gates import Gates
from engine.console.running.devices import DevicePool
from engine.console.running.supervisor import Supervisor
from engine.jobfiles import CANCEL, PAUSE
from engine.presets import PresetLibrary
from engine.resolve import Resolution, resolve

log = logging.getLogger("traindeck.control")


def ask_once_released(store: JobStore, supervisor: Supervisor, job_id: str, action: str) -> None:
    """Ask a running trainer to pause or cancel once the store lock is released: the request is a
    file in the job folder, or a scancel, and every other user's call waits for that lock."""
    store.lock.after_release(partial(supervisor.request_stop, job_id, action))


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
        self.enqueuer = Enqueuer(store, access, views, workspace)
        self.resumer = Resumer(store, access, presets, machine, workspace, devices, base_dir)

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
        none, within `user`'s quotas."""
        queued = self.enqueuer.enqueue_all(user, runs)
        self.wake()
        return queued

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
            fields = self.resumer.requeued_fields(job, checkpoint, changes, allow_inexact)
            job = change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, **fields)
        self.wake()
        return self.views.summary(job)

    # ---- priority, sharing, deleting ------------------------------------------------------------

    def set_priority(self, user: User, job_id: str, priority: Any) -> dict[str, Any]:
        """Reorder the queue: higher starts first. Running jobs keep their place on the device;
        the new priority counts when they are queued again (and for preemption)."""
        priority = coerce_field("priority", priority)  # the schema's bounds, as at submit
        with self.store.lock:
            job = self.store.lookup(job_id)
            self.access.authorize(job, user, "re-prioritise")
            if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
                raise ConfigError(f"job {job.job_id} is {job.status}: "
                                  f"its priority no longer matters")
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
        self.views.metrics_cache.forget(job.job_id)
        return {"job_id": job.job_id, "deleted": True}
