"""Planning one scheduler round, under the store lock: which queued jobs start now (each with its
devices taken), which running jobs are marked to make room for a preempting one, and why every
other queued job waits. Nothing here starts or stops a process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.console.records.job import Job, JobStatus
from engine.console.records.store import JobStore
from engine.console.running.devices import DevicePool
from engine.console.running.launcher import Claim
from engine.console.running.supervisor import Supervisor
from engine.console.scheduling.admission import held_by_quota, preemption_victims

log = logging.getLogger("traindeck.scheduler")


def queue_order(jobs: list[Job]) -> list[Job]:
    """The order queued jobs will start in: higher priority first, then first submitted."""
    queued = [j for j in jobs if j.status == JobStatus.QUEUED]
    return sorted(queued, key=lambda j: (-j.priority, j.seq))


@dataclass
class Plan:
    claims: list[Claim] = field(default_factory=list)  # start now
    victims: list[str] = field(default_factory=list)  # to pause once the lock is released
    waiting: dict[str, str] = field(default_factory=dict)  # queued job -> why it waits


class Planner:
    def __init__(self, store: JobStore, supervisor: Supervisor, devices: DevicePool,
                 quotas_of: Callable[[str], dict[str, int | None]]):
        self.store, self.supervisor, self.devices = store, supervisor, devices
        self.quotas_of = quotas_of

    def plan(self, now: float) -> Plan:
        """Walk the queue in order; the first job that cannot start for want of devices (or
        waits a moment for the warm trainer) keeps its place, and the jobs after it wait too."""
        jobs = self.store.all((JobStatus.QUEUED.value, JobStatus.RUNNING.value))
        running = [j for j in jobs if j.status == JobStatus.RUNNING]
        plan = Plan()
        blocked = False
        for job in queue_order(jobs):
            if job.damaged:
                plan.waiting[job.job_id] = (f"never started: its stored record is damaged "
                                            f"({job.damaged}); cancel or delete it")
                continue
            if blocked:
                plan.waiting[job.job_id] = "behind the jobs above it"
                continue
            held = held_by_quota(job, running, self.quotas_of(job.owner), self.devices)
            if held:
                plan.waiting[job.job_id] = held  # its owner's limit; others may go ahead
                continue
            delay = self.supervisor.start_delay(job, now)
            if delay:
                plan.waiting[job.job_id] = delay  # a moment; it keeps its place at the head
                blocked = True
                continue
            slots = self.devices.take(job.job_id, job.config.gpus * job.config.nodes)
            if slots is not None:
                plan.waiting[job.job_id] = "starting"  # shown while its trainer starts
                plan.claims.append(Claim(job, slots))
                running.append(job)
                continue
            # The head of the queue waits for devices; nobody jumps it.
            plan.waiting[job.job_id] = f"waiting for {self._needed(job)}"
            if job.config.preempt:
                plan.victims += self._preempt_for(job, running)
            blocked = True
        return plan

    def _needed(self, job: Job) -> str:
        if not self.devices.gpu_indices:
            return "the CPU"
        return f"{job.config.gpus} free GPU{'s' if job.config.gpus != 1 else ''}"

    def _preempt_for(self, job: Job, running: list[Job]) -> list[str]:
        """Mark the jobs that make room for this one as paused for it, and name them: the caller
        pauses them (exactly, through the pause path) once the store lock is released. Each
        resumes by itself once it is back at the head of the queue with room."""
        if any(j.requested == "pause" and j.preempted_by == job.job_id for j in running):
            return []  # already making room
        victims = preemption_victims(job, running, self.devices, self.supervisor.running)
        for victim in victims:
            self.store.update(victim.job_id, requested="pause", preempted_by=job.job_id)
            log.info("job %s paused to make room for %s (preempt)", victim.job_id, job.job_id)
        return [victim.job_id for victim in victims]
