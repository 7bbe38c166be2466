"""What a trainer's exit makes of its job: the attempt and its progress recorded, the status
changed through the state machine, the devices freed once that is recorded, and the job queued
again when a preemption paused it or a crash leaves it retries."""

from __future__ import annotations

import logging

from engine.console.records.job import (
    IllegalTransition,
    Job,
    JobStatus,
    StatusListener,
    change_status,
)
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.following import TrainerExit
from engine.jobfiles import EXIT_INVALID

log = logging.getLogger("traindeck.scheduler")


class ExitRecorder:
    def __init__(self, store: JobStore, workspace: Workspace, devices: DevicePool,
                 listeners: list[StatusListener]):
        self.store, self.workspace, self.devices = store, workspace, devices
        self.listeners = listeners

    def record(self, finished: TrainerExit, now: float) -> None:
        """Raises OSError when the database cannot be written: the caller tries again later."""
        job = self.store.get(finished.job_id)
        paths = self.workspace.job_paths(job.job_id)
        latest = paths.latest_checkpoint()
        progress = {**job.progress, **{k: v for k, v in (finished.progress or {}).items()
                                       if k in ("step", "total_steps", "loss") and v is not None}}
        attempts = list(job.attempts)
        if attempts:
            attempts[-1] = {**attempts[-1], "finished_at": now, "status": str(finished.status),
                            "exit_code": finished.exit_code, "error": finished.error}
        fields = dict(exit_code=finished.exit_code, error=finished.error, progress=progress,
                      attempts=attempts, last_checkpoint=latest.name if latest else None,
                      resume_from=None)
        changes = (finished.progress or {}).get("microbatch_changes") or []
        if changes:
            # It trains on with the smaller micro-batch: a resume must continue with it.
            fields.update(microbatch_changes=changes,
                          config=job.config.replace(**changes[-1]["to"]))
        try:
            job = change_status(self.store, job.job_id, finished.status, self.listeners, now,
                                **fields)
        except IllegalTransition:
            log.exception("job %s: cannot record exit %s", job.job_id, finished)
            self.devices.release(finished.job_id)
            return
        self.devices.release(finished.job_id)  # once recorded: until then the job holds them
        log.info("job %s %s (exit %s)", job.job_id, job.status, finished.exit_code)
        if job.status == JobStatus.PAUSED and job.preempted_by:
            change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, now,
                          resume_from=latest.name if latest else None, preempted_by=None)
            log.info("job %s re-queued after preemption by %s", job.job_id, job.preempted_by)
            return
        self._maybe_retry(job, now)

    def _maybe_retry(self, job: Job, now: float) -> None:
        retries = job.config.max_retries
        crashed = job.status == JobStatus.FAILED and job.exit_code != EXIT_INVALID
        if not crashed or job.attempt > retries:
            return
        checkpoint = self.workspace.job_paths(job.job_id).latest_checkpoint()
        change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, now,
                      resume_from=checkpoint.name if checkpoint else None,
                      error=None)
        log.info("job %s re-queued (retry %d of %d)", job.job_id, job.attempt, retries)
