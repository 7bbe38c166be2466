"""Sweeps: several runs of one base config with a few fields varied, queued together as ordinary
jobs tagged with one sweep id. Every run is checked before any is queued, and the owner's quotas
must hold all of them; the summary ranks the runs by evaluation loss (training loss for runs that
do not evaluate); cancelling a sweep cancels what has not finished."""

from __future__ import annotations

import secrets
import time
from typing import Any

from engine.config import MAX_NAME_CHARS, ConfigError, shorten
from engine.console.jobs.control import JobControl
from engine.console.jobs.sweep_spec import describe, parse_sweep
from engine.console.jobs.views import JobViews
from engine.console.people.access import Access
from engine.console.people.users import User
from engine.console.records.job import Job, JobStatus
from engine.console.records.store import JobStore

UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


def new_sweep_id(now: float | None = None) -> str:
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{secrets.token_hex(2)}"


class Sweeps:
    def __init__(self, store: JobStore, access: Access, control: JobControl, views: JobViews):
        self.store, self.access, self.control, self.views = store, access, control, views

    def submit(self, user: User, spec: Any) -> dict[str, Any]:
        """Check every run, then queue them all (or none) for `user`."""
        sweep = parse_sweep(spec)
        sweep_id = new_sweep_id()
        checked = []
        for number, values in enumerate(sweep.runs, start=1):
            config = {**sweep.base, **values,
                      "name": f"{sweep.name} #{number} {describe(values)}"[:MAX_NAME_CHARS]}
            if sweep.priority is not None:
                config["priority"] = sweep.priority
            try:
                checked.append((self.control.check(user, config), values))
            except ConfigError as exc:
                raise ConfigError([f"sweep run {number} ({describe(values)}): {problem}"
                                   for problem in exc.problems]) from None
        # All the runs fit the quotas, or none is queued.
        queued = self.control.enqueue_all(user, [
            (resolution, {"id": sweep_id, "name": sweep.name, "values": values})
            for resolution, values in checked])
        return {"sweep_id": sweep_id, "name": sweep.name,
                "job_ids": [job["job_id"] for job in queued]}

    def _runs(self, sweep_id: Any) -> list[Job]:
        if not isinstance(sweep_id, str) or not sweep_id.strip():
            raise ConfigError(f"sweep_id must be a sweep's id (see /list_sweeps), got "
                              f"{shorten(sweep_id)}")
        jobs = [job for job in self.store.all(copy=False)
                if job.sweep and job.sweep.get("id") == sweep_id.strip()]
        if not jobs:
            raise ConfigError(f"no sweep with id {shorten(sweep_id)} (see /list_sweeps)")
        return sorted(jobs, key=lambda job: job.seq)

    def get(self, user: User, sweep_id: Any) -> dict[str, Any]:
        """The runs side by side, best first, and which one won (everyone sees every sweep)."""
        jobs = self._runs(sweep_id)
        runs = [self._run(job) for job in jobs]
        by = "eval_loss" if any(r["best_eval_loss"] is not None for r in runs) else "loss"
        key = "best_eval_loss" if by == "eval_loss" else "best_loss"
        runs.sort(key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0))
        best = runs[0] if runs[0][key] is not None else None
        return {"sweep_id": jobs[0].sweep["id"], "name": jobs[0].sweep.get("name"),
                "owner": jobs[0].owner, "runs": runs, "ranked_by": by,
                "best": best and {"job_id": best["job_id"], "values": best["values"],
                                  by: best[key]},
                "counts": _counts(jobs), "finished": not any(j.status in UNFINISHED for j in jobs)}

    def _run(self, job: Job) -> dict[str, Any]:
        stats = self.views.metrics(job.job_id).stats
        return {"job_id": job.job_id, "name": job.name, "status": job.status,
                "values": job.sweep.get("values", {}), "step": self.views.progress(job).get("step"),
                "best_eval_loss": stats.best_eval_loss, "best_loss": stats.best_loss,
                "last_loss": stats.last_loss}

    def list(self, user: User) -> list[dict[str, Any]]:
        """Every sweep, newest first: id, name, owner, runs and their statuses (everyone's)."""
        groups: dict[str, list[Job]] = {}
        for job in self.store.all(copy=False):
            if job.sweep and isinstance(job.sweep.get("id"), str):
                groups.setdefault(job.sweep["id"], []).append(job)
        listed = [{"sweep_id": sweep_id, "name": jobs[0].sweep.get("name"),
                   "owner": jobs[0].owner, "runs": len(jobs), "counts": _counts(jobs),
                   "created_at": min(j.created_at for j in jobs)}
                  for sweep_id, jobs in groups.items()]
        return sorted(listed, key=lambda s: s["created_at"], reverse=True)

    def cancel(self, user: User, sweep_id: Any) -> dict[str, Any]:
        """Cancel every run that has not finished (owner or admin); finished ones stay."""
        jobs = self._runs(sweep_id)
        for job in jobs:
            self.access.authorize(job, user, "cancel")  # all or nothing
        cancelled = []
        for job in jobs:
            if job.status in UNFINISHED:
                self.control.cancel(user, job.job_id)
                cancelled.append(job.job_id)
        return {"sweep_id": jobs[0].sweep["id"], "cancelled": cancelled,
                "kept": [job.job_id for job in jobs if job.job_id not in cancelled]}


def _counts(jobs: list[Job]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[str(job.status)] = counts.get(str(job.status), 0) + 1
    return counts
