"""The engine's public API: everything the UI and the API endpoints call.

One `Engine` per workspace. It owns the store, the supervisor and the scheduler thread. Errors a
person can act on are raised as ConfigError, JobNotFound or IllegalTransition, whose messages say
what to change.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import engine
from engine import machine as machines
from engine.access import Access
from engine.analytics import analyze
from engine.artifacts import Exporter
from engine.config import ConfigError, check_combinations, coerce_field, shorten, validate_fields
from engine.gates import Gates
from engine.job import (IllegalTransition, Job, JobStatus, StatusListener, can_transition,
                        change_status, new_job_id)
from engine.jsonsafe import made_safe
from engine.jobfiles import CANCEL, CHECKPOINT_NAME, PAUSE, read_json, write_json_atomic
from engine.metrics import MetricsLog
from engine.presets import PresetLibrary
from engine.resolve import Resolution, resolve_submission
from engine.scheduler import DevicePool, Scheduler, queue_order
from engine.store import DatabaseDamaged, JobNotFound, JobStore, StorageError, TinyDBJobStore
from engine.export import merged_folder
from engine.supervisor import REPO_DIR, Supervisor, log_tail, write_job_file
from engine.telemetry import SystemHistory
from engine.uploads import Uploads
from engine.users import User, Users
from engine.workspace import Workspace

log = logging.getLogger("traindeck.engine")
METRICS_CACHE_SIZE = 32  # finished jobs whose metrics stay parsed in memory
EXPORT_TIMEOUT_S = 3600  # merging a large model on a slow disk takes minutes, not hours
# Resume keeps these as they were: the checkpoints only make sense with them.
CHECKPOINT_BOUND = frozenset({"method", "model", "dataset", "dataset_format", "adapter", "lora_r",
                              "lora_alpha", "lora_target_modules", "max_length", "packing"})
# Changing these is allowed on request, but the run then differs from a straight one.
EXACTNESS_BOUND = frozenset({"per_device_train_batch_size", "gradient_accumulation_steps", "seed",
                             "gpus"})


MAX_PROMPT_CHARS = 8000


def run_tool(command: list[str], what: str, stdin: str | None = None) -> str:
    """Run one of the trainer-side tools (export, generate) in its own process; its output, or a
    ConfigError with the last lines of what it printed."""
    try:
        run = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, input=stdin,
                             timeout=EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} took longer than {EXPORT_TIMEOUT_S // 60} minutes and was "
                          f"stopped") from None
    if run.returncode != 0:
        lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
        raise ConfigError(f"{what} failed: " + "\n".join(lines[-8:]))
    return run.stdout


class Engine:
    def __init__(self, workspace: str | Path, presets: PresetLibrary | None = None,
                 machine: machines.Machine | None = None, store: JobStore | None = None,
                 gpu_indices: list[int] | None = None, users: Users | None = None,
                 data_roots: list[str | Path] | tuple = (), max_upload_bytes: int | None = None):
        self.workspace = Workspace(workspace)
        self.users = users or Users()
        self.access = Access(self.users, self.workspace.root, self.workspace.uploads_dir,
                             tuple(Path(r).resolve() for r in data_roots), self._find)
        self.uploads = Uploads(self.workspace.uploads_dir)
        self.max_upload_bytes = max_upload_bytes
        self.gates = Gates()
        self.presets = presets or PresetLibrary()
        self.machine = machine or machines.detect()
        self._store = store
        if gpu_indices is None:
            gpu_indices = [g.index for g in self.machine.gpus]
        self.listeners: list[StatusListener] = [self._keep_record]
        self.supervisor = Supervisor(self.workspace.cache_dir)
        self.devices = DevicePool(gpu_indices)
        self.scheduler: Scheduler | None = None
        self._metrics_cache: OrderedDict[str, MetricsLog] = OrderedDict()
        self.exporter = Exporter(self.workspace.exports_dir)
        self.system = SystemHistory(self.workspace.root)
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
                                   self.listeners, quotas_of=self.users.quotas_of)
        self.recover()
        return self

    def start(self) -> Engine:
        """Open, then run the scheduler thread and the telemetry sampler."""
        self.open()
        self.scheduler.start()
        self.system.start()
        return self

    def close(self) -> None:
        """Stop scheduling and let go of the workspace. Running trainers keep running; the next
        console re-attaches to them."""
        if self.scheduler is not None:
            self.scheduler.stop()
        self.system.stop()
        if self._store is not None:
            self._store.close()
        self.workspace.release()

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

    def _keep_record(self, job: Job, previous: str) -> None:
        """Each job folder keeps a copy of its record, so `repair-db` can rebuild the database
        from the folders alone. Best effort: a full disk must not fail a status change."""
        try:
            write_json_atomic(self.workspace.job_paths(job.job_id).record, job.to_dict())
        except OSError as exc:
            log.warning("job %s: cannot keep its record in its folder: %s", job.job_id, exc)

    def _find(self, job_id: str) -> Job | None:
        try:
            return self.store.get(job_id)
        except (JobNotFound, RuntimeError):
            return None

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("the engine is not open")
        return self._store

    def recover(self) -> None:
        """After a console restart, follow every job the database says is running: a trainer
        that survived the restart is re-attached; one that ended while no console was watching is
        reaped by the next scheduler round (its exit record, or "interrupted")."""
        for job in self.store.all():
            if job.status != JobStatus.RUNNING:
                continue
            trainer = self.supervisor.attach(job, self.workspace.job_paths(job.job_id))
            slots = (job.attempts[-1].get("devices") if job.attempts else None) or []
            self.devices.assigned[job.job_id] = slots or self.devices.free()[:1]
            log.info("job %s: %s", job.job_id,
                     "re-attached" if trainer.alive_at_attach else "trainer gone, reaping")

    # ---- presets and validation -----------------------------------------------------------------

    def list_presets(self) -> list[dict[str, Any]]:
        return self.presets.summaries()

    def get_preset(self, name: str | None) -> dict[str, Any]:
        preset = self.presets.get(name)
        return {"name": preset.name, "title": preset.title, "description": preset.description,
                "sample": preset.sample, **preset.config()}

    def validate(self, config: dict[str, Any] | None, user: User | None = None) -> Resolution:
        """Resolve a submission for `user` without queueing it."""
        return resolve_submission(config, self.presets, self.machine,
                                  rules=self.access.source_rules(user))

    def check(self, config: dict[str, Any] | None, user: User | None = None) -> Resolution:
        """The UI's *Check and preview*: a validation that reads the whole dataset, so it takes
        one of the limited slots for heavy work."""
        user = user or self.users.get(None)
        with self.gates.check.slot(user.name):
            return self.validate(config, user)

    # ---- jobs -----------------------------------------------------------------------------------

    def submit(self, config: dict[str, Any] | None, user: User | None = None) -> dict[str, Any]:
        """Queue a job for `user` (None: the local owner, without quotas)."""
        user = user or self.users.get(None)
        with self.gates.check.slot(user.name):
            resolution = self.validate(config, user)
        settings = resolution.config
        self.access.check_job_size(settings, user, self.devices.capacity,
                                   self.devices.describe_capacity)
        now = time.time()
        with self.store.lock:
            jobs = self.store.all(copy=False)
            self.access.check_job_count(user, jobs)
            self.access.check_queue_quota(user, jobs)
            job = Job(
                job_id=new_job_id(now),
                name=settings["name"] or f"{resolution.preset} {time.strftime('%H:%M:%S')}",
                config=settings, owner=user.name, priority=settings["priority"],
                seq=self.store.next_seq(), created_at=now, queued_at=now,
                resolved=resolution.resolved)
            while self._exists(job.job_id):
                job.job_id = new_job_id(now)
            paths = self.workspace.job_paths(job.job_id)
            try:
                write_job_file(paths, job, self.workspace.cache_dir, None)
                self.store.add(job)
                write_json_atomic(paths.record, job.to_dict())
            except OSError as exc:
                # Nothing half-made stays behind: no folder without a record.
                shutil.rmtree(paths.root, ignore_errors=True)
                raise StorageError(f"could not store the job ({exc.strerror or exc}); nothing was "
                                   f"queued") from None
            position = self.position(job.job_id)  # as submitted: the scheduler may start it next
        if self.scheduler is not None:
            self.scheduler.wake()
        return {"job_id": job.job_id, "status": job.status, "position": position}

    def _exists(self, job_id: str) -> bool:
        try:
            self.store.get(job_id)
            return True
        except JobNotFound:
            return False

    def position(self, job_id: str) -> int | None:
        """1 = next to start; None when the job is not queued."""
        order = [j.job_id for j in queue_order(self.store.all((JobStatus.QUEUED.value,)))]
        return order.index(job_id) + 1 if job_id in order else None

    def list_jobs(self, status: str | None = None, user: User | None = None) -> list[dict[str, Any]]:
        if status:
            try:
                status = JobStatus(status).value
            except ValueError:
                raise ConfigError(f"status must be one of {', '.join(s.value for s in JobStatus)} "
                                  f"or empty for all; got {shorten(status)}") from None
        positions = {j.job_id: n for n, j in
                     enumerate(queue_order(self.store.all((JobStatus.QUEUED.value,))), start=1)}
        jobs = self.store.all((status,) if status else None, copy=False)  # read only
        jobs.sort(key=lambda j: j.seq, reverse=True)
        return [self.access.summary_for({**self._safe_summary(j), "position": positions.get(j.job_id)},
                                        user) for j in jobs]

    def _safe_summary(self, job: Job) -> dict[str, Any]:
        """One job's row; a record that cannot be summarised is shown as damaged, never allowed
        to fail the whole list."""
        try:
            return self._summary(job)
        except Exception as exc:  # defence in depth: the store already repairs what it reads
            log.exception("job %s: cannot summarise", job.job_id)
            return {"job_id": job.job_id, "name": str(job.name)[:200], "owner": str(job.owner),
                    "status": str(job.status), "priority": 0, "method": None, "adapter": None,
                    "model": None, "dataset": None, "progress": {}, "loss": None,
                    "created_at": None, "started_at": None, "finished_at": None, "error": None,
                    "requested": None, "shared": False,
                    "damaged": f"cannot be shown: {type(exc).__name__}"}

    def get_job(self, job_id: str, user: User | None = None) -> dict[str, Any]:
        job = self._get(job_id)
        data = job.to_dict()
        data["progress"] = self._progress(job)
        data["position"] = self.position(job_id) if job.status == JobStatus.QUEUED else None
        data["waiting"] = self.scheduler.waiting.get(job.job_id) if self.scheduler else None
        data["last_metrics"] = self._metrics(job_id).last
        data["checkpoints"] = self.list_checkpoints(job_id)
        data["job_dir"] = str(self.workspace.job_paths(job_id).root)
        data["command"] = f"python -m engine.train {self.workspace.job_paths(job_id).job_file}"
        return self.access.job_for(made_safe(data), user)

    def _get(self, job_id: str) -> Job:
        if not isinstance(job_id, str) or not job_id.strip():
            raise ConfigError("job_id is required")
        if len(job_id) > 100:
            raise JobNotFound(shorten(job_id))
        return self.store.get(job_id.strip())

    def _progress(self, job: Job) -> dict[str, Any]:
        live = self.supervisor.progress(job.job_id)
        return {**job.progress, **live} if live else dict(job.progress)

    def _summary(self, job: Job) -> dict[str, Any]:
        # The job table asks for every job every few seconds: the last loss comes from live
        # progress or from what the job recorded when it ended, never from re-reading metrics.
        progress = self._progress(job)
        return {
            "job_id": job.job_id, "name": job.name, "owner": job.owner, "status": job.status,
            "priority": job.priority, "method": job.config.get("method"),
            "adapter": job.config.get("adapter"), "model": job.config.get("model"),
            "dataset": job.config.get("dataset"),
            "progress": {k: v for k, v in progress.items() if k != "loss"},
            "loss": progress.get("loss"), "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at,
            "error": (job.error or "").split("\n")[0] or None, "requested": job.requested,
            "shared": job.shared, "damaged": job.damaged,
        }

    def _metrics(self, job_id: str) -> MetricsLog:
        live = self.supervisor.metrics_log(job_id)
        if live is not None:
            live.refresh()  # a stat() when nothing is new; spares the caller the supervisor's tick
            return live
        cached = self._metrics_cache.pop(job_id, None)
        if cached is None:
            cached = MetricsLog(self.workspace.job_paths(job_id).metrics)
        cached.refresh()
        self._metrics_cache[job_id] = cached
        while len(self._metrics_cache) > METRICS_CACHE_SIZE:
            self._metrics_cache.popitem(last=False)
        return cached

    def get_metrics(self, job_id: str, since_step: int | None = None) -> list[dict[str, Any]]:
        self._get(job_id)
        try:
            since = -1 if since_step is None else int(since_step)
        except (TypeError, ValueError):
            raise ConfigError(f"since_step must be a whole number, got {since_step!r}") from None
        return self._metrics(job_id).since(since)

    # ---- control --------------------------------------------------------------------------------

    def cancel(self, job_id: str, user: User | None = None) -> dict[str, Any]:
        return self._stop(job_id, CANCEL, user)

    def pause(self, job_id: str, user: User | None = None) -> dict[str, Any]:
        return self._stop(job_id, PAUSE, user)

    def _stop(self, job_id: str, action: str, user: User | None) -> dict[str, Any]:
        target = JobStatus.CANCELLED if action == CANCEL else JobStatus.PAUSED
        with self.store.lock:
            job = self._get(job_id)
            self.access.authorize(job, user, action)
            if job.status == JobStatus.RUNNING and job.job_id in self.supervisor.running:
                self.supervisor.request_stop(job.job_id, action)
                if job.requested != CANCEL:
                    # A person's pause overrides a preemption's: no automatic resume after it.
                    job = self.store.update(job.job_id, requested=action, preempted_by=None)
            elif can_transition(job.status, target):
                job = change_status(self.store, job.job_id, target, self.listeners)
            else:
                raise IllegalTransition(job.job_id, job.status, target.value)
        if self.scheduler is not None:
            self.scheduler.wake()
        return self._summary(job)

    def resume(self, job_id: str, checkpoint: str | None = None,
               changes: dict[str, Any] | None = None, allow_inexact: bool = False,
               user: User | None = None) -> dict[str, Any]:
        """Queue a paused, failed or cancelled job again (same id) from `checkpoint` or its latest
        complete one. `changes` edits the config first; a change that would make the resumed run
        differ from a straight one is refused unless `allow_inexact`."""
        with self.store.lock:
            job = self._get(job_id)
            self.access.authorize(job, user, "resume")
            if not can_transition(job.status, JobStatus.QUEUED):
                raise IllegalTransition(job.job_id, job.status, JobStatus.QUEUED.value)
            paths = self.workspace.job_paths(job.job_id)
            if checkpoint:
                name = self.exporter.checkpoint_folder(paths, checkpoint).name
            else:
                latest = paths.latest_checkpoint()
                name = latest.name if latest else None
            fields: dict[str, Any] = {"resume_from": name}
            if changes:
                fields["config"] = self._changed_config(job, changes, allow_inexact or name is None)
                fields["priority"] = fields["config"]["priority"]
                self.access.check_job_size(fields["config"], self.access.owner_of(job),
                                           self.devices.capacity, self.devices.describe_capacity)
            self.access.check_queue_quota(self.access.owner_of(job),
                                          self.store.all((JobStatus.QUEUED.value,)))
            job = change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, **fields)
        if self.scheduler is not None:
            self.scheduler.wake()
        return self._summary(job)

    def _changed_config(self, job: Job, changes: dict[str, Any], allow_inexact: bool) -> dict[str, Any]:
        if not isinstance(changes, dict):
            raise ConfigError("changes must be an object of field: value")
        clean = validate_fields(changes)
        frozen = sorted(k for k in clean if k in CHECKPOINT_BOUND and clean[k] != job.config.get(k))
        if frozen:
            raise ConfigError(f"cannot change {', '.join(frozen)} on resume: the checkpoints were "
                              f"made with the job's values; submit a new job instead")
        inexact = sorted(k for k in clean if k in EXACTNESS_BOUND and clean[k] != job.config.get(k))
        if inexact and not allow_inexact:
            raise ConfigError(f"changing {', '.join(inexact)} on resume breaks exact continuation "
                              f"(the resumed run would differ from a straight one); pass "
                              f"allow_inexact to do it anyway")
        merged = {**job.config, **clean}
        check_combinations(merged)
        return merged

    # ---- checkpoints ----------------------------------------------------------------------------

    def list_checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        self._get(job_id)
        paths = self.workspace.job_paths(job_id)
        metrics = self._metrics(job_id)  # get_job is polled: look steps up, never scan them
        result: list[dict[str, Any]] = []
        for folder in paths.checkpoints():
            if folder.is_symlink():
                continue
            files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
            step = int(CHECKPOINT_NAME.match(folder.name).group(1))
            result.append({"name": folder.name, "step": step,
                           "size_bytes": sum(p.stat().st_size for p in files),
                           "created_at": folder.stat().st_mtime,
                           "loss": (metrics.at(step) or {}).get("loss"),
                           "best": False})
        scored = [c for c in result if isinstance(c["loss"], (int, float))]
        if scored:
            min(scored, key=lambda c: c["loss"])["best"] = True
        return result

    # ---- artifacts and analytics ----------------------------------------------------------------

    def set_priority(self, job_id: str, priority: Any, user: User | None = None) -> dict[str, Any]:
        """Reorder the queue: higher starts first. Running jobs keep their place on the device;
        the new priority counts when they are queued again (and for preemption)."""
        priority = coerce_field("priority", priority)  # the schema's bounds, as at submit
        with self.store.lock:
            job = self._get(job_id)
            self.access.authorize(job, user, "re-prioritise")
            if job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED):
                raise ConfigError(f"job {job.job_id} is {job.status}: its priority no longer matters")
            job = self.store.update(job.job_id, priority=int(priority),
                                    config={**job.config, "priority": int(priority)})
        self._keep_record(job, job.status)
        if self.scheduler is not None:
            self.scheduler.wake()
        return {**self._summary(job), "position": self.position(job.job_id)}

    def download_model(self, job_id: str, checkpoint: str | None = None,
                       user: User | None = None) -> Path:
        job = self._get(job_id)
        self.access.authorize_use(job, user, "download")
        with self.gates.download.slot(self._name(user)):
            return self.exporter.model_zip(job.job_id, self.workspace.job_paths(job.job_id),
                                           checkpoint or None)

    def export_merged(self, job_id: str, checkpoint: str | None = None,
                      user: User | None = None) -> Path:
        """Merge the job's adapter (final, or a checkpoint's) into its base model, in a separate
        process, and return a zip of the standalone model."""
        job = self._get(job_id)
        self.access.authorize(job, user, "export")
        paths = self.workspace.job_paths(job.job_id)
        if job.config.get("adapter") == "full":
            raise ConfigError(f"job {job.job_id} trained every weight: its model is standalone "
                              f"already; download it with /download_model")
        if checkpoint:
            source = self.exporter.checkpoint_folder(paths, checkpoint)
        else:
            source = paths.final_model
            if not source.is_dir():
                raise ConfigError(f"job {job.job_id} has no final model yet; export a checkpoint")
        destination = merged_folder(paths, checkpoint)
        with self.gates.export.slot(self._name(user)):
            if not destination.is_dir() or destination.stat().st_mtime < source.stat().st_mtime:
                command = [sys.executable, "-m", "engine.export", str(paths.root)]
                if checkpoint:
                    command += ["--checkpoint", checkpoint]
                run_tool(command, f"export of job {job.job_id}")
            suffix = f"_{checkpoint}" if checkpoint else ""
            return self.exporter.folder_zip(f"model_{job.job_id}{suffix}_merged.zip", destination,
                                            paths)

    def try_model(self, job_id: str, prompt: str, checkpoint: str | None = None,
                  max_new_tokens: int = 64, user: User | None = None) -> dict[str, Any]:
        """Generate from the base model and the trained one (final, or a checkpoint) for one
        prompt, in a separate process; returns {prompt, base, tuned, source}."""
        job = self._get(job_id)
        self.access.authorize_use(job, user, "try")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("prompt is required")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ConfigError(f"prompt must be at most {MAX_PROMPT_CHARS} characters, got "
                              f"{len(prompt)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or not 1 <= max_new_tokens <= 1024:
            raise ConfigError(f"max_new_tokens must be between 1 and 1024, got "
                              f"{shorten(max_new_tokens)}")
        paths = self.workspace.job_paths(job.job_id)
        command = [sys.executable, "-m", "engine.generate", str(paths.root),
                   "--max-new-tokens", str(max_new_tokens)]
        if checkpoint:
            command += ["--checkpoint", self.exporter.checkpoint_folder(paths, checkpoint).name]
        elif not paths.final_model.is_dir():
            raise ConfigError(f"job {job.job_id} has no final model yet; choose a checkpoint")
        with self.gates.generate.slot(self._name(user)):
            # The prompt travels on stdin: no text a person types is ever read as an option.
            output = run_tool(command, "generation", stdin=prompt)
        return json.loads(output.strip().splitlines()[-1])

    def download_logs(self, job_id: str, user: User | None = None) -> Path:
        job = self._get(job_id)
        self.access.authorize(job, user, "download")
        with self.gates.download.slot(self._name(user)):
            return self.exporter.logs_zip(job.job_id, self.workspace.job_paths(job.job_id))

    def log_tail(self, job_id: str, lines: int = 40, user: User | None = None) -> str:
        job = self._get(job_id)
        if not self.access.is_owner_or_admin(job.owner, user):
            return f"(the log of {job.owner}'s job is visible to its owner and admins)"
        return log_tail(self.workspace.job_paths(job.job_id), lines)

    def _name(self, user: User | None) -> str:
        return (user or self.users.get(None)).name

    # ---- sharing, deleting, uploads -------------------------------------------------------------

    def share_job(self, job_id: str, shared: Any, user: User | None = None) -> dict[str, Any]:
        """Let every user try this job's model, download it and train on it (or stop that)."""
        if not isinstance(shared, bool):
            raise ConfigError(f"shared must be true or false, got {shorten(shared)}")
        with self.store.lock:
            job = self._get(job_id)
            self.access.authorize(job, user, "share")
            job = self.store.update(job.job_id, shared=shared)
        self._keep_record(job, job.status)
        return self._summary(job)

    def delete_job(self, job_id: str, user: User | None = None) -> dict[str, Any]:
        """Remove a finished, paused or cancelled job: its record, its folder and its exports
        (an upload it used goes once no job uses it)."""
        with self.store.lock:
            job = self._get(job_id)
            self.access.authorize(job, user, "delete")
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                raise ConfigError(f"job {job.job_id} is {job.status}; cancel it before deleting it")
            self.store.delete(job.job_id)
        shutil.rmtree(self.workspace.job_paths(job.job_id).root, ignore_errors=True)
        self._metrics_cache.pop(job.job_id, None)
        self.clean_uploads()
        return {"job_id": job.job_id, "deleted": True}

    def upload_dataset(self, temporary: str | Path, original_name: str | None = None,
                       user: User | None = None) -> dict[str, Any]:
        """Keep an uploaded dataset file for `user`; returns the path to name in a submission."""
        user = user or self.users.get(None)
        source = Path(temporary)
        with self.gates.upload.slot(user.name):
            quota = user.quotas.get("max_upload_mb")
            stored = self.uploads.store(user.name, source, original_name or source.name,
                                        None if quota is None else quota << 20,
                                        self.max_upload_bytes)
        return {"dataset": str(stored), "bytes": stored.stat().st_size,
                "stored_mb": round(self.uploads.used_bytes(user.name) / 2**20, 1)}

    def clean_uploads(self) -> None:
        in_use = {j.config.get("dataset") for j in self.store.all(copy=False)}
        for path in self.uploads.clean({p for p in in_use if isinstance(p, str)}):
            log.info("removed unused upload %s", path)

    def job_analytics(self, job_id: str) -> dict[str, Any]:
        job = self._get(job_id)
        summary = read_json(self.workspace.job_paths(job.job_id).summary) or {}
        phases = {k: v for k, v in summary.items() if k.endswith("_s") and k != "train_runtime"}
        log = self._metrics(job.job_id)
        with log.lock:  # the records and their running stats, from the same moment
            result = analyze(log.records, self._progress(job), job.status, job.started_at,
                             job.finished_at, phases, stats=log.stats)
        return {"job_id": job.job_id, **result}

    def system_stats(self) -> dict[str, Any]:
        stats = dict(self.system.latest())
        counts = self.store.status_counts()
        stats["queue"] = {s.value: counts.get(s.value, 0) for s in JobStatus}
        return stats

    # ---- status ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        counts = self.store.status_counts()
        return {
            "status": "ok",
            "version": engine.__version__,
            "device": self.machine.describe(),
            "gpus": [g.__dict__ | {"compute_capability": list(g.compute_capability)}
                     for g in self.machine.gpus],
            "queued": counts.get(JobStatus.QUEUED.value, 0),
            "running": counts.get(JobStatus.RUNNING.value, 0),
            "scheduler_cpu_s": round(self.scheduler.cpu_seconds, 3) if self.scheduler else 0.0,
        }
