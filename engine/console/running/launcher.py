"""Starting the jobs the scheduler chose, outside the store lock: a trainer's fork, an `sbatch`
or the rewrite of a job's files can take seconds, and every submit, list and page refresh waits
for that lock. The scheduler claims a job under the lock (it stays queued, its devices taken);
the launcher starts its trainer, then records it as running under the lock again, unless the job
was cancelled, paused or deleted meanwhile: then the trainer is withdrawn."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.console.records.job import Job, JobStatus, StatusListener, change_status
from engine.console.records.store import JobNotFound, JobStore
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.supervisor import Supervisor

log = logging.getLogger("traindeck.scheduler")


@dataclass
class Claim:
    """A queued job chosen to start, with the devices taken for it."""

    job: Job
    slots: list

    @property
    def job_id(self) -> str:
        return self.job.job_id


class Launcher:
    def __init__(self, store: JobStore, supervisor: Supervisor, workspace: Workspace,
                 devices: DevicePool, listeners: list[StatusListener]):
        self.store, self.supervisor, self.workspace = store, supervisor, workspace
        self.devices, self.listeners = devices, listeners

    def start(self, claims: list[Claim], now: float) -> None:
        """Start each claimed job; never called with the store lock held."""
        for index, claim in enumerate(claims):
            try:
                self._launch(claim, now)
            except BaseException:
                for unstarted in claims[index:]:
                    if unstarted.job_id not in self.supervisor.running:
                        self.devices.release(unstarted.job_id)  # nothing runs: free again
                raise

    def _launch(self, claim: Claim, now: float) -> None:
        """Start a claimed job's trainer, then record it, unless the job was cancelled, paused
        or resumed anew meanwhile: then the trainer is withdrawn and its devices freed."""
        job = claim.job
        env = {}
        if self.devices.gpu_indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(s) for s in claim.slots)
        job.attempt += 1
        try:
            trainer = self.supervisor.launch(job, self.workspace.job_paths(job.job_id), env)
        except OSError as exc:
            self.devices.release(job.job_id)
            with self.store.lock:
                if self._still_claimed(claim):
                    change_status(self.store, job.job_id, JobStatus.RUNNING, self.listeners, now,
                                  attempt=job.attempt)
                    change_status(self.store, job.job_id, JobStatus.FAILED, self.listeners, now,
                                  error=f"could not start the trainer: {exc}")
            return
        record = {"attempt": job.attempt, "status": JobStatus.RUNNING.value, "started_at": now,
                  "resume_from": job.resume_from, "pid": trainer.pid, "devices": claim.slots,
                  **trainer.job_fields()}
        recorded = False
        try:
            with self.store.lock:
                if self._still_claimed(claim):
                    change_status(self.store, job.job_id, JobStatus.RUNNING, self.listeners, now,
                                  attempt=job.attempt, pid=trainer.pid or None,
                                  attempts=job.attempts + [record], **trainer.job_fields())
                    recorded = True
        finally:
            if not recorded:  # changed meanwhile, or its start could not be recorded
                log.info("job %s: its trainer is withdrawn (the job changed while it started, "
                         "or the start could not be recorded)", job.job_id)
                self.supervisor.withdraw(job.job_id)
                self.devices.release(job.job_id)
        if recorded:
            log.info("started job %s (attempt %d, pid %d)", job.job_id, job.attempt, trainer.pid)

    def _still_claimed(self, claim: Claim) -> bool:
        """Whether the job is still queued as it was when claimed (not cancelled, paused,
        deleted, or cancelled and queued again, meanwhile)."""
        try:
            current = self.store.get(claim.job_id)
        except JobNotFound:
            return False
        return current.status == JobStatus.QUEUED and current.queued_at == claim.job.queued_at
