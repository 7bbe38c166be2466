"""What the console shows of its jobs: the list, one job, its metrics, checkpoints, analytics and
log; each as the asking user may see it (another user's paths, log and error details are hidden).
Everything here only reads."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine.config import ConfigError, shorten
from engine.console.metrics.analytics import analyze
from engine.console.metrics.log import MetricsLog
from engine.console.people.access import Access
from engine.console.people.users import User
from engine.console.records.job import Job, JobStatus
from engine.console.records.jsonsafe import made_safe
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.running.supervisor import Supervisor, TrainerExit, log_tail
from engine.console.scheduling.scheduler import queue_order
from engine.jobfiles import checkpoint_step, read_json

log = logging.getLogger("traindeck.views")
METRICS_CACHE_SIZE = 32  # finished jobs whose metrics stay parsed in memory
NOT_RECORDED = ("its trainer ended but the job database cannot be written (the workspace's disk "
                "is full?): shown as it will be recorded once there is room")


def run_seconds(job: Job, now: float | None = None) -> float | None:
    """Time spent running over all attempts (a resumed job's total, not only this attempt's)."""
    now = time.time() if now is None else now
    spans = []
    for number, attempt in enumerate(job.attempts, start=1):
        # Only the newest attempt of a running job is still going; an older one without an end
        # (its console died) is not counted.
        running = job.status == JobStatus.RUNNING and number == len(job.attempts)
        end = attempt.get("finished_at") or (now if running else None)
        if attempt.get("started_at") and end:
            spans.append(end - attempt["started_at"])
    return sum(spans) if spans else None


def mark_best(checkpoints: list[dict[str, Any]]) -> None:
    """The best checkpoint: lowest evaluation loss where the job evaluates, else lowest training
    loss (the trainer keeps the same one from rotation)."""
    for metric in ("eval_loss", "loss"):
        scored = [c for c in checkpoints if isinstance(c.get(metric), (int, float))]
        if scored:
            min(scored, key=lambda c: c[metric])["best"] = True
            return


class JobViews:
    def __init__(self, store: JobStore, supervisor: Supervisor, workspace: Workspace,
                 access: Access, waiting: Callable[[str], str | None] = lambda job_id: None,
                 unrecorded: Callable[[], list[TrainerExit]] = list):
        self.store = store
        self.unrecorded = unrecorded  # trainer exits the scheduler could not record yet
        self.supervisor = supervisor
        self.workspace = workspace
        self.access = access
        self.waiting = waiting  # why a queued job has not started (the scheduler knows)
        self._metrics_cache: OrderedDict[str, MetricsLog] = OrderedDict()

    # ---- the list -------------------------------------------------------------------------------

    def position(self, job_id: str) -> int | None:
        """1 = next to start; None when the job is not queued."""
        order = [j.job_id for j in queue_order(self.store.all((JobStatus.QUEUED.value,)))]
        return order.index(job_id) + 1 if job_id in order else None

    def list_jobs(self, user: User, status: str | None = None) -> list[dict[str, Any]]:
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
        return [self.access.summary_for(
            {**self._safe_summary(j), "position": positions.get(j.job_id)}, user) for j in jobs]

    def as_ended(self, job: Job) -> tuple[Job, str | None]:
        """The job as it will be recorded when its trainer ended but its end could not be
        written (a full disk), and why it is shown so: never `running` after its trainer died."""
        for ended in self.unrecorded():
            if ended.job_id == job.job_id and job.status == JobStatus.RUNNING:
                return dataclasses.replace(job, status=str(ended.status), error=ended.error,
                                           exit_code=ended.exit_code, pid=None), NOT_RECORDED
        return job, None

    def summary(self, job: Job) -> dict[str, Any]:
        # The job table asks for every job every few seconds: the last loss comes from live
        # progress or from what the job recorded when it ended, never from re-reading metrics.
        job, unrecorded = self.as_ended(job)
        progress = self.progress(job)
        return {
            "job_id": job.job_id, "name": job.name, "owner": job.owner, "status": job.status,
            "priority": job.priority, "method": job.config.method, "adapter": job.config.adapter,
            "model": job.config.model, "dataset": job.config.dataset,
            "progress": {k: v for k, v in progress.items()
                         if k not in ("loss", "microbatch_changes")},
            "loss": progress.get("loss"), "created_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at,
            "error": (job.error or "").split("\n")[0] or None, "requested": job.requested,
            "shared": job.shared, "damaged": job.damaged, "run_s": run_seconds(job),
            "sweep": job.sweep, "notify_error": job.notify_error, "unrecorded": unrecorded,
        }

    def _safe_summary(self, job: Job) -> dict[str, Any]:
        """One job's row; a record that cannot be summarised is shown as damaged, never allowed
        to fail the whole list."""
        try:
            return self.summary(job)
        except Exception as exc:  # defence in depth: the store already repairs what it reads
            log.exception("job %s: cannot summarise", job.job_id)
            return {"job_id": job.job_id, "name": str(job.name)[:200], "owner": str(job.owner),
                    "status": str(job.status), "priority": 0, "method": None, "adapter": None,
                    "model": None, "dataset": None, "progress": {}, "loss": None,
                    "created_at": None, "started_at": None, "finished_at": None, "error": None,
                    "requested": None, "shared": False, "run_s": None, "sweep": None,
                    "notify_error": None, "unrecorded": None,
                    "damaged": f"cannot be shown: {type(exc).__name__}"}

    def progress(self, job: Job) -> dict[str, Any]:
        live = self.supervisor.progress(job.job_id)
        return {**job.progress, **live} if live else dict(job.progress)

    # ---- one job --------------------------------------------------------------------------------

    def get_job(self, user: User, job_id: str) -> dict[str, Any]:
        job, unrecorded = self.as_ended(self.store.lookup(job_id))
        paths = self.workspace.job_paths(job.job_id)
        data = job.to_dict()
        data["unrecorded"] = unrecorded
        progress = self.progress(job)
        data["microbatch_changes"] = progress.pop("microbatch_changes", None) or \
            data["microbatch_changes"]
        data["progress"] = progress
        data["position"] = self.position(job.job_id) if job.status == JobStatus.QUEUED else None
        data["waiting"] = self.waiting(job.job_id)
        data["last_metrics"] = self.metrics(job.job_id).last
        data["checkpoints"] = self.list_checkpoints(user, job.job_id)
        data["job_dir"] = str(paths.root)
        data["command"] = f"python -m engine.train {paths.job_file}"
        return self.access.job_for(made_safe(data), user)

    def metrics(self, job_id: str) -> MetricsLog:
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

    def forget(self, job_id: str) -> None:
        self._metrics_cache.pop(job_id, None)

    def get_metrics(self, user: User, job_id: str,
                    since_step: int | None = None) -> list[dict[str, Any]]:
        """Everyone may see a job's metrics (its charts); the caller is named all the same."""
        job = self.store.lookup(job_id)
        try:
            since = -1 if since_step is None else int(since_step)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"since_step must be a whole number, got "
                              f"{shorten(since_step)}") from None
        return self.metrics(job.job_id).since(since)

    def list_checkpoints(self, user: User, job_id: str) -> list[dict[str, Any]]:
        """Names, steps, sizes and losses: shown to everyone, like the charts."""
        job = self.store.lookup(job_id)
        paths = self.workspace.job_paths(job.job_id)
        metrics = self.metrics(job.job_id)  # get_job is polled: look steps up, never scan them
        result: list[dict[str, Any]] = []
        for folder in paths.checkpoints():
            try:
                if folder.is_symlink():
                    continue
                files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
                size, created = sum(p.stat().st_size for p in files), folder.stat().st_mtime
            except FileNotFoundError:
                continue  # rotated away by the trainer (save_total_limit) while being listed
            step = checkpoint_step(folder.name)
            record = metrics.at(step) or {}
            result.append({"name": folder.name, "step": step, "size_bytes": size,
                           "created_at": created, "loss": record.get("loss"),
                           "eval_loss": record.get("eval_loss"), "best": False})
        mark_best(result)
        return result

    def job_analytics(self, user: User, job_id: str) -> dict[str, Any]:
        """Rates, ETA and best loss: shown to everyone, like the charts."""
        job = self.store.lookup(job_id)
        summary = read_json(self.workspace.job_paths(job.job_id).summary) or {}
        phases = {k: v for k, v in summary.items() if k.endswith("_s") and k != "train_runtime"}
        metrics = self.metrics(job.job_id)
        with metrics.lock:  # the records and their running stats, from the same moment
            result = analyze(metrics.records, self.progress(job), job.status, job.started_at,
                             job.finished_at, phases, stats=metrics.stats)
        if summary.get("stopped_early"):
            result["stopped_early"] = summary["stopped_early"]
        return {"job_id": job.job_id, **result}

    def log_tail(self, user: User, job_id: str, lines: int = 40) -> str:
        job = self.store.lookup(job_id)
        if not self.access.is_owner_or_admin(job.owner, user):
            return f"(the log of {job.owner}'s job is visible to its owner and admins)"
        return log_tail(self.workspace.job_paths(job.job_id), lines)
