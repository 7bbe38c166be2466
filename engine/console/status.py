"""What every visitor sees of the console as a whole, nothing of one job: its health (device,
queue counts, disk, the scheduler's CPU, the warm trainer), the system telemetry with the queue,
and the workspace's disk as the banner shows it."""

from __future__ import annotations

from typing import Any

import engine
from engine import machine as machines
from engine.console.metrics.telemetry import SystemHistory
from engine.console.records.job import JobStatus
from engine.console.records.store import JobStore
from engine.console.running.supervisor import Supervisor
from engine.console.scheduling.disk import DiskWatch, disk_report
from engine.console.scheduling.scheduler import Scheduler


class ConsoleStatus:
    def __init__(self, store: JobStore, machine: machines.Machine, system: SystemHistory,
                 disk: DiskWatch, supervisor: Supervisor, scheduler: Scheduler):
        self.store, self.machine, self.system, self.disk = store, machine, system, disk
        self.supervisor, self.scheduler = supervisor, scheduler

    def system_stats(self) -> dict[str, Any]:
        stats = dict(self.system.latest())
        counts = self.store.status_counts()
        stats["queue"] = {s.value: counts.get(s.value, 0) for s in JobStatus}
        return stats

    def disk_status(self) -> dict[str, Any]:
        """The workspace's disk: free, floor, and (when short) what is held back and what cannot
        be recorded, in a message for the banner."""
        unrecorded = [e.job_id for e in self.scheduler.unrecorded]
        queued = self.store.status_counts().get(JobStatus.QUEUED.value, 0)
        return disk_report(self.disk.state(), queued, unrecorded)

    def health(self) -> dict[str, Any]:
        counts = self.store.status_counts()
        disk = self.disk_status()
        ended = len(disk["unrecorded"])  # their trainers ended: no longer running
        return {
            "status": "ok" if disk["state"] == "ok" else f"disk {disk['state']}",
            "version": engine.__version__,
            "device": self.machine.describe(),
            "gpus": [g.__dict__ | {"compute_capability": list(g.compute_capability)}
                     for g in self.machine.gpus],
            "queued": counts.get(JobStatus.QUEUED.value, 0),
            "running": counts.get(JobStatus.RUNNING.value, 0) - ended,
            "disk": disk,
            "scheduler_cpu_s": round(self.scheduler.cpu_seconds, 3),
            "warm_start": self.supervisor.spares.describe(),
        }
