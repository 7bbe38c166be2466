"""Submitting: a checked config becomes a queued job with its folder (job.yaml and a copy of its
record), several at once all or none, within the owner's quotas counted under the store lock."""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

from engine.atomic import write_json_atomic
from engine.console.jobs.views import JobViews
from engine.console.people.access import Access
from engine.console.people.users import User
from engine.console.records.job import Job, new_job_id
from engine.console.records.store import JobNotFound, JobStore, StorageError
from engine.console.records.workspace import Workspace
from engine.console.running.supervisor import write_job_file
from engine.jobfiles import JobPaths
from engine.resolve import Resolution

log = logging.getLogger("traindeck.control")


def prepare_job(workspace: Workspace, store: JobStore, user: User, resolution: Resolution,
                sweep: dict[str, Any] | None) -> Job:
    """A new job and its folder: job.yaml and a copy of its record, what `repair-db` rebuilds it
    from. Its submit order (seq) is given when it is stored; until its first status change the
    folder's copy says 0, and repair orders such jobs by their creation time."""
    settings, now = resolution.config, time.time()
    job = Job(job_id=new_job_id(now),
              name=settings.name or f"{settings.preset} {time.strftime('%H:%M:%S')}",
              config=settings, owner=user.name, priority=settings.priority, created_at=now,
              queued_at=now, resolved=resolution.resolved, sweep=sweep)
    while _stored(store, job.job_id) or not _made_new(workspace.job_paths(job.job_id)):
        job.job_id = new_job_id(now)
    paths = workspace.job_paths(job.job_id)
    try:
        write_job_file(paths, job, workspace.cache_dir, None)
        write_json_atomic(paths.record, job.to_dict())
    except BaseException:
        shutil.rmtree(paths.root, ignore_errors=True)
        raise
    return job


def remove_unqueued(store: JobStore, workspace: Workspace, jobs: list[Job], stored: int) -> None:
    """After an enqueue failed part-way: the jobs already stored leave the store again and every
    folder goes, so that "nothing was queued" holds (best effort: the disk that refused one
    write may refuse these too; a job that stays keeps its folder)."""
    kept = set()
    with store.lock:
        for job in jobs[:stored]:
            try:
                store.delete(job.job_id)
            except (OSError, JobNotFound) as exc:
                log.error("job %s: stored by a failed submit, cannot be removed: %s",
                          job.job_id, exc)
                kept.add(job.job_id)
    for job in jobs:
        if job.job_id not in kept:
            shutil.rmtree(workspace.job_paths(job.job_id).root, ignore_errors=True)


def _stored(store: JobStore, job_id: str) -> bool:
    try:
        store.get(job_id)
        return True
    except JobNotFound:
        return False


def _made_new(paths: JobPaths) -> bool:
    """Whether the job's folder was made now (not there before): two submits never share one."""
    try:
        paths.root.mkdir(parents=True)
        return True
    except FileExistsError:
        return False


class Enqueuer:
    def __init__(self, store: JobStore, access: Access, views: JobViews, workspace: Workspace):
        self.store, self.access, self.views, self.workspace = store, access, views, workspace

    def enqueue_all(self, user: User, runs: list[tuple[Resolution, dict[str, Any] | None]]
                    ) -> list[dict[str, Any]]:
        """Queue configs `check` passed (each with the sweep it is a run of, or None), all or
        none, within `user`'s quotas. The folders are written first, outside the store lock: a
        slow disk holds up no other user's call."""
        jobs: list[Job] = []
        stored = 0
        try:
            for resolution, sweep in runs:
                jobs.append(prepare_job(self.workspace, self.store, user, resolution, sweep))
            with self.store.lock:
                # Under the lock: jobs queued since the check count too, and none slips in.
                self.access.check_holdings(user, self.store.all(copy=False), len(jobs))
                for job in jobs:
                    job.seq = self.store.next_seq()
                    self.store.add(job)
                    stored += 1
                positions = [self.views.position(job.job_id) for job in jobs]
        except BaseException as exc:
            remove_unqueued(self.store, self.workspace, jobs, stored)
            if isinstance(exc, OSError):
                raise StorageError(f"could not store the job ({exc.strerror or exc}); nothing "
                                   f"was queued") from None
            raise
        return [{"job_id": job.job_id, "status": job.status, "position": position}
                for job, position in zip(jobs, positions, strict=True)]
