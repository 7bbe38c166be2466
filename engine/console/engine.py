"""The console's engine: one per workspace. It owns the store, the supervisor and the scheduler
thread, and puts together the collaborators the UI and the API call:

- `engine.jobs`: check, submit, pause, cancel, resume, re-prioritise, share, delete
- `engine.sweeps`: several runs of one config with a few fields varied, as one sweep
- `engine.views`: the job list, one job, metrics, checkpoints, analytics, logs
- `engine.artifacts`: downloads, merged exports, trying a model, uploads
- `engine.access`: who may do what, quotas, where data may come from

Every entry point of these takes the acting user first, with no default: there is no "no one"
that means admin. The console without logins acts as LOCAL_USER, which `Users.get` gives only
then, from the request, in one place (ui/api.py `user_of`).

Errors a person can act on are ConfigError, JobNotFound, NotYourJob or IllegalTransition, whose
messages say what to change.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import engine
from engine import machine as machines
from engine.console.jobs.control import JobControl
from engine.console.jobs.sweeps import Sweeps
from engine.console.jobs.views import JobViews
from engine.console.metrics.telemetry import SystemHistory
from engine.console.people.access import Access
from engine.console.people.notify import JobNotifications, Notifier
from engine.console.people.users import User, Users
from engine.console.records.changes import Changes, job_key
from engine.console.records.job import Job, JobStatus, StatusListener
from engine.console.records.store import DatabaseDamaged, JobNotFound, JobStore, TinyDBJobStore
from engine.console.records.workspace import Workspace
from engine.console.results.artifacts import Artifacts
from engine.console.results.gates import Gates
from engine.console.results.uploads import Retention
from engine.console.running.cluster import ClusterSettings
from engine.console.running.devices import ClusterDevices, DevicePool
from engine.console.running.supervisor import Supervisor
from engine.console.scheduling.disk import (
    DiskWatch,
    disk_report,
    recorded_checkpoints,
    running_checkpoints,
)
from engine.console.scheduling.estimate import length_note
from engine.console.scheduling.scheduler import Scheduler
from engine.presets import PresetLibrary
from engine.resolve import Resolution

log = logging.getLogger("traindeck.engine")


class Engine:
    def __init__(self, workspace: str | Path, presets: PresetLibrary | None = None,
                 machine: machines.Machine | None = None, store: JobStore | None = None,
                 gpu_indices: list[int] | None = None, users: Users | None = None,
                 data_roots: list[str | Path] | tuple = (), max_upload_bytes: int | None = None,
                 warm_start: bool = True, cluster: ClusterSettings | None = None,
                 notifier: Notifier | None = None, disk_floor_bytes: int | None = None,
                 upload_retention: Retention | None = None):
        self.workspace = Workspace(workspace)
        self.users = users or Users()
        self.presets = presets or PresetLibrary()
        self.machine = machine or machines.detect()
        self.access = Access(self.users, self.workspace.root, self.workspace.uploads_dir,
                             tuple(Path(r).resolve() for r in data_roots), self._find)
        self.gates = Gates()
        self.max_upload_bytes, self.upload_retention = max_upload_bytes, upload_retention
        self.cluster = cluster
        if cluster is not None:  # Slurm places the jobs; the console follows them
            from engine.console.running.slurm import SlurmSupervisor
            self.devices = ClusterDevices()
            self.supervisor = SlurmSupervisor(self.workspace.cache_dir, cluster)
        else:
            self.devices = DevicePool([g.index for g in self.machine.gpus]
                                      if gpu_indices is None else gpu_indices)
            self.supervisor = Supervisor(self.workspace.cache_dir, warm_start=warm_start)
        self.system = SystemHistory(self.workspace.root)
        self.disk = DiskWatch(self.workspace.root, disk_floor_bytes,
                              checkpoints=lambda: running_checkpoints(self.supervisor.running))
        self.changes = Changes()  # what the live views await
        self.notifier = notifier or Notifier()
        self.supervisor.on_change = lambda job_id: self.changes.bump(job_key(job_id))
        self.listeners: list[StatusListener] = []
        self._store = store
        self.scheduler: Scheduler | None = None
        self.jobs: JobControl | None = None
        self.views: JobViews | None = None
        self.artifacts: Artifacts | None = None
        self.sweeps: Sweeps | None = None
        self.started_at = time.time()

    # ---- life cycle -----------------------------------------------------------------------------

    def open(self) -> Engine:
        """Take the workspace and load the jobs; re-attach to trainers still running."""
        self.workspace.acquire()
        try:
            if self._store is None:
                self._store = TinyDBJobStore(self.workspace.database)
                self._check_store_matches_folders()
        except DatabaseDamaged:
            self.workspace.release()
            raise
        self.scheduler = Scheduler(self.store, self.supervisor, self.workspace, self.devices,
                                   self.listeners, quotas_of=self.users.quotas_of,
                                   disk=self.disk)
        # Each round replaces the scheduler's `waiting` map: look it up at the time of asking.
        self.views = JobViews(self.store, self.supervisor, self.workspace, self.access,
                              waiting=lambda job_id: self.scheduler.waiting.get(job_id),
                              unrecorded=lambda: self.scheduler.unrecorded)
        self.jobs = JobControl(self.store, self.access, self.views, self.presets, self.machine,
                               self.workspace, self.supervisor, self.devices, self.gates,
                               self.listeners, wake=self.scheduler.wake)
        self.sweeps = Sweeps(self.store, self.access, self.jobs, self.views)
        self.listeners.append(self.jobs.keep_record)
        self.listeners.append(lambda job, previous: self.changes.bump(job_key(job.job_id)))
        notifications = JobNotifications(self.notifier, self.store, self.views, self.users)
        self.notifier.record_failure = notifications.record_failure
        self.listeners.append(notifications.on_status)
        self.supervisor.on_micro_batch_lowered = notifications.on_micro_batch_lowered
        self.artifacts = Artifacts(self.store, self.access, self.workspace, self.gates,
                                   self.max_upload_bytes, self.upload_retention)
        self.recover()
        self.disk.note_checkpoints(recorded_checkpoints(self.workspace, self.store.all(copy=False)))
        return self

    def start(self) -> Engine:
        """Open, then run the scheduler thread, the telemetry sampler and the removal of unused
        uploads."""
        self.open()
        self.supervisor.keep_spare()  # ready before the first job comes
        self.notifier.start()
        self.scheduler.start()
        self.system.start()
        self.artifacts.upload_cleaner.start()
        return self

    def close(self) -> None:
        """Stop scheduling and let go of the workspace. Running trainers keep running; the next
        console re-attaches to them."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.supervisor.spares.stop()
        self.system.stop()
        self.notifier.stop()
        if self.artifacts is not None:
            self.artifacts.upload_cleaner.stop()
        if self._store is not None:
            self._store.close()
        self.workspace.release()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("the engine is not open")
        return self._store

    def _check_store_matches_folders(self) -> None:
        """A database with no jobs beside folders of jobs lost its history (a truncated or
        deleted file): starting would write an empty one over it."""
        if self.store.all(copy=False):
            return
        folders = self.workspace.job_folders()
        if folders:
            self._store.close()
            self._store = None
            raise DatabaseDamaged(
                f"job database {self.workspace.database} holds no jobs, but "
                f"{self.workspace.jobs_dir} holds {len(folders)} job folders; the console will "
                f"not start over it. Rebuild the database from them with `python app.py repair-db "
                f"--workspace {self.workspace.root}`, or move the folders away to start afresh.")

    def _find(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except (JobNotFound, RuntimeError):
            return None

    def recover(self) -> None:
        """After a console restart, follow every job the database says is running: a trainer
        that survived the restart is re-attached; one that ended while no console was watching is
        reaped by the next scheduler round (its exit record, or "interrupted")."""
        for job in self.store.all((JobStatus.RUNNING.value,)):
            trainer = self.supervisor.attach(job, self.workspace.job_paths(job.job_id))
            slots = (job.attempts[-1].get("devices") if job.attempts else None) or []
            if self.cluster is not None:
                self.devices.take(job.job_id, job.config.gpus * job.config.nodes)
            else:
                self.devices.assigned[job.job_id] = slots or self.devices.free()[:1]
            log.info("job %s: %s", job.job_id,
                     "re-attached" if trainer.alive_at_attach else "trainer gone, reaping")

    # ---- the console as a whole ---------------------------------------------------------------

    def list_presets(self) -> list[dict[str, Any]]:
        return self.presets.summaries()

    def advice(self, user: User, resolution: Resolution) -> list[str]:
        """What a person should know before submitting a checked config: how long it runs, and
        whatever in it does not suit this machine."""
        config = resolution.config
        notes = [length_note(config, resolution.resolved, self.store.all(copy=False),
                             lambda job_id: self.views.job_analytics(user, job_id)["steps_per_s"])]
        if config.adapter == "qlora" and not self.machine.has_cuda and self.cluster is None:
            notes.append("QLoRA is meant for a GPU: on this machine without one it runs, but "
                         "slowly (the 4-bit weights are unpacked on every step). LoRA trains the "
                         "same kind of adapter faster here.")
        return notes

    def get_preset(self, name: str | None) -> dict[str, Any]:
        preset = self.presets.get(name)
        # The config's own `name` (the job name, empty) follows the preset's: a form filled from
        # this must not name the job after the template.
        return {"name": preset.name, "title": preset.title, "description": preset.description,
                "sample": preset.sample, **preset.config(), "preset": preset.name}

    def system_stats(self) -> dict[str, Any]:
        stats = dict(self.system.latest())
        counts = self.store.status_counts()
        stats["queue"] = {s.value: counts.get(s.value, 0) for s in JobStatus}
        return stats

    def disk_status(self) -> dict[str, Any]:
        """The workspace's disk: free, floor, and (when short) what is held back and what cannot
        be recorded, in a message for the banner."""
        unrecorded = [e.job_id for e in self.scheduler.unrecorded] if self.scheduler else []
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
            "scheduler_cpu_s": round(self.scheduler.cpu_seconds, 3) if self.scheduler else 0.0,
            "warm_start": self.supervisor.spares.describe(),
        }
