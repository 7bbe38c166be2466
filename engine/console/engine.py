"""The console's engine: one per workspace. It owns the store, the supervisor and the scheduler
thread, and puts together the collaborators the UI and the API call:

- `engine.jobs`: check, submit, pause, cancel, resume, re-prioritise, share, delete
- `engine.sweeps`: several runs of one config with a few fields varied, as one sweep
- `engine.views`: the job list, one job, metrics, checkpoints, analytics, logs
- `engine.artifacts`: downloads, merged exports, trying a model, uploads
- `engine.access`: who may do what, quotas, where data may come from
- `engine.status`: the console as a whole: health, telemetry with the queue, the disk

Every entry point of these takes the acting user first, with no default: there is no "no one"
that means admin. The console without logins acts as LOCAL_USER, which `Users.get` gives only
then, from the request, in one place (ui/api.py `user_of`).

Errors a person can act on are ConfigError, JobNotFound, NotYourJob or IllegalTransition, whose
messages say what to change.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
from engine.console.results.tools import Tools
from engine.console.results.uploads import Retention
from engine.console.running.cluster import ClusterSettings
from engine.console.running.devices import ClusterDevices, DevicePool
from engine.console.running.reattach import reattach
from engine.console.running.supervisor import Supervisor
from engine.console.scheduling.disk import (
    DiskWatch,
    recorded_checkpoints,
    running_checkpoints,
)
from engine.console.scheduling.estimate import length_note
from engine.console.scheduling.scheduler import Scheduler
from engine.console.status import ConsoleStatus
from engine.presets import PresetLibrary
from engine.resolve import Resolution

QLORA_ON_CPU = ("QLoRA is meant for a GPU: on this machine without one it runs, but slowly (the "
                "4-bit weights are unpacked on every step). LoRA trains the same kind of adapter "
                "faster here.")


def executor(workspace: Workspace, machine: machines.Machine, cluster: ClusterSettings | None,
             gpu_indices: list[int] | None, warm_start: bool) -> tuple[DevicePool, Supervisor]:
    """Where trainers run: on this machine's GPUs (or CPU), or as Slurm jobs the console follows
    (Slurm then places them)."""
    if cluster is not None:
        from engine.console.running.slurm import SlurmSupervisor
        return ClusterDevices(), SlurmSupervisor(workspace.cache_dir, cluster)
    devices = DevicePool([g.index for g in machine.gpus] if gpu_indices is None else gpu_indices)
    return devices, Supervisor(workspace.cache_dir, warm_start=warm_start)


def open_store(workspace: Workspace) -> JobStore:
    """The workspace's job database. One with no jobs beside folders of jobs lost its history (a
    truncated or deleted file): starting would write an empty one over it."""
    store = TinyDBJobStore(workspace.database)
    folders = [] if store.all(copy=False) else workspace.job_folders()
    if folders:
        store.close()
        raise DatabaseDamaged(
            f"job database {workspace.database} holds no jobs, but "
            f"{workspace.jobs_dir} holds {len(folders)} job folders; the console will "
            f"not start over it. Rebuild the database from them with `python app.py repair-db "
            f"--workspace {workspace.root}`, or move the folders away to start afresh.")
    return store


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
        self.devices, self.supervisor = executor(self.workspace, self.machine, cluster,
                                                 gpu_indices, warm_start)
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
        self.status: ConsoleStatus | None = None
        self.sweeps: Sweeps | None = None
        self.started_at = time.time()

    # ---- life cycle -----------------------------------------------------------------------------

    def open(self) -> Engine:
        """Take the workspace and load the jobs; re-attach to trainers still running."""
        self.workspace.acquire()
        try:
            if self._store is None:
                self._store = open_store(self.workspace)
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
                                   Tools(self.supervisor.spares), self.max_upload_bytes,
                                   self.upload_retention)
        self.status = ConsoleStatus(self.store, self.machine, self.system, self.disk,
                                    self.supervisor, self.scheduler)
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

    def _find(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except (JobNotFound, RuntimeError):
            return None

    def recover(self) -> None:
        """After a console restart, follow every job the database says is running: a trainer
        that survived the restart is re-attached; one that ended while no console was watching is
        reaped by the next scheduler round (its exit record, or "interrupted")."""
        reattach(self.store.all((JobStatus.RUNNING.value,)), self.supervisor, self.devices,
                 self.workspace, clustered=self.cluster is not None)

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
            notes.append(QLORA_ON_CPU)
        return notes

    def get_preset(self, name: str | None) -> dict[str, Any]:
        return self.presets.get(name).form_values()

    # The console as a whole, as every visitor sees it (engine.console.status).

    def system_stats(self) -> dict[str, Any]:
        return self.status.system_stats()

    def disk_status(self) -> dict[str, Any]:
        return self.status.disk_status()

    def health(self) -> dict[str, Any]:
        return self.status.health()
