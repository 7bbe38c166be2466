"""Whether a queued job may start now, beyond free devices: its owner's running-job and GPU
quotas, and, for a preempting job, which running jobs to pause to make room. Pure functions of
the jobs and the device pool."""

from __future__ import annotations

from collections.abc import Container

from engine.console.records.job import Job
from engine.console.running.devices import DevicePool


def held_by_quota(job: Job, running: list[Job], quotas: dict[str, int | None],
                  devices: DevicePool) -> str | None:
    """Why the job's owner may not start it now (None: they may)."""
    mine = [j for j in running if j.owner == job.owner]
    limit = quotas.get("max_running_jobs")
    if limit is not None and len(mine) >= limit:
        return f"quota max_running_jobs: {job.owner} has {len(mine)} running (quota {limit})"
    limit = quotas.get("max_gpus")
    in_use = devices.in_use({j.job_id for j in mine})
    asked = job.config.gpus * job.config.nodes if devices.counts_gpus else 0
    if limit is not None and asked and in_use + asked > limit:
        return (f"quota max_gpus: {job.owner} has {in_use} GPUs in use, this job needs "
                f"{asked} (quota {limit})")
    return None


def preemption_victims(job: Job, running: list[Job], devices: DevicePool,
                       supervised: Container[str]) -> list[Job]:
    """The lowest-priority running jobs (below this one's priority, newest first among equals)
    whose devices together let `job` start."""
    free = len(devices.free()) if devices.gpu_indices else 0
    needed = (job.config.gpus - free) if devices.gpu_indices else 1
    candidates = sorted((j for j in running if j.priority < job.priority and not j.requested
                         and j.job_id in supervised),
                        key=lambda j: (j.priority, -(j.started_at or 0)))
    victims = []
    for victim in candidates:
        if needed <= 0:
            break
        victims.append(victim)
        needed -= len(devices.assigned.get(victim.job_id, [])) or 1
    return victims
