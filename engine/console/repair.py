"""`python app.py repair-db`: rebuild the job database from the job folders.

Every job folder holds what its record needs: job.yaml (id, name, owner, priority, submit order,
config), exit.json (how the trainer last ended), metrics.jsonl (progress), checkpoints. The old
database file, if any, is kept beside the new one as jobs.json.damaged-<time>; nothing is deleted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from engine.console.job import JOB_ID, Job, JobStatus, readable_record, record_problems
from engine.jobfiles import (EXIT_CANCELLED, EXIT_COMPLETED, EXIT_INVALID, EXIT_PAUSED, JobPaths,
                             read_json)
from engine.console.metrics import MetricsLog
from engine.console.store import TinyDBJobStore
from engine.console.workspace import Workspace

EXIT_STATUS = {EXIT_COMPLETED: JobStatus.COMPLETED, EXIT_PAUSED: JobStatus.PAUSED,
               EXIT_CANCELLED: JobStatus.CANCELLED}


def rebuild_job(folder: Path) -> Job | None:
    """A job's record from its folder alone, or None when the folder holds no usable job: the
    console's copy of the record where there is one, brought up to date by the trainer's exit
    record, else rebuilt from job.yaml, exit.json, metrics and checkpoints."""
    paths = JobPaths(folder)
    kept = read_json(paths.record)
    if isinstance(kept, dict) and kept.get("job_id") == folder.name:
        problems = record_problems(kept)
        job = Job.from_dict(readable_record(kept, problems) if problems else kept)
        if job.status == JobStatus.RUNNING:
            _rebuild_status(job, paths)  # it ended (or not) after the copy was written
        return job
    return _from_job_file(folder, paths)


def _from_job_file(folder: Path, paths: JobPaths) -> Job | None:
    try:
        document = yaml.safe_load(paths.job_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        return None
    job_id = folder.name
    if not JOB_ID.match(job_id):
        return None
    config = document["config"]
    created = _number(document.get("created_at")) or paths.job_file.stat().st_mtime
    job = Job(job_id=job_id, name=str(document.get("name") or job_id)[:200], config=config,
              owner=str(document.get("owner") or "local"),
              priority=_int(document.get("priority", config.get("priority", 0))),
              seq=_int(document.get("seq")), created_at=created, queued_at=created,
              shared=document.get("shared") is True,
              sweep=_sweep(document.get("sweep")))
    metrics = MetricsLog(paths.metrics)
    metrics.refresh()
    last = metrics.last or {}
    summary = read_json(paths.summary) or {}
    job.progress = {"step": last.get("step", 0), "total_steps": summary.get("max_steps"),
                    **({"loss": last["loss"]} if isinstance(last.get("loss"), float) else {})}
    latest = paths.latest_checkpoint()
    job.last_checkpoint = latest.name if latest else None
    _rebuild_status(job, paths)
    return job


def _rebuild_status(job: Job, paths: JobPaths) -> None:
    ended = read_json(paths.exit_record) or {}
    code = ended.get("code")
    beat = read_json(paths.heartbeat) or {}
    if isinstance(code, int):
        job.exit_code = code
        job.finished_at = _number(ended.get("time")) or paths.exit_record.stat().st_mtime
        job.status = EXIT_STATUS.get(code, JobStatus.FAILED).value
        if job.status == JobStatus.FAILED:
            job.error = ("invalid job (exit code 2); see its log" if code == EXIT_INVALID
                         else f"the trainer exited with code {code}; see its log")
        if job.status == JobStatus.PAUSED:
            job.paused_at = job.finished_at
    elif _trainer_alive(beat.get("pid"), paths):
        job.status, job.pid = JobStatus.RUNNING.value, beat["pid"]  # the console re-attaches
    elif paths.log.exists():
        job.status = JobStatus.FAILED.value
        job.error = ("interrupted: the trainer stopped without an exit record (the record was "
                     "rebuilt by repair-db). Resume continues from the last checkpoint.")
    else:
        job.status = JobStatus.QUEUED.value  # never started
    if job.status != JobStatus.QUEUED:
        job.started_at = paths.log.stat().st_mtime if paths.log.exists() else job.created_at
        job.attempt = 1


def _trainer_alive(pid: Any, paths: JobPaths) -> bool:
    if not isinstance(pid, int) or pid <= 1:
        return False
    try:
        return str(paths.job_file) in " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31 else 0


def repair(workspace: Workspace) -> tuple[list[Job], list[Path], Path | None]:
    """Rebuild the database of a workspace no console holds. Returns the jobs written, the
    folders that held no usable job, and where the old file was kept (None: there was none)."""
    workspace.acquire()
    try:
        jobs, skipped = [], []
        for folder in workspace.job_folders():
            job = rebuild_job(folder)
            (jobs if job else skipped).append(job or folder)
        jobs.sort(key=lambda j: (j.seq or 0, j.created_at))
        for number, job in enumerate(jobs, start=1):
            job.seq = number  # submit order as it was, without gaps or clashes
        database = workspace.database
        kept = None
        if database.exists():
            kept = database.with_name(f"{database.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(database, kept)
        store = TinyDBJobStore(database)
        for job in jobs:
            store.add(job)
        store.close()
        return jobs, skipped, kept
    finally:
        workspace.release()


def _sweep(value: Any) -> dict[str, Any] | None:
    """The sweep a job ran in, where job.yaml says so plausibly."""
    if isinstance(value, dict) and isinstance(value.get("id"), str) and len(value["id"]) <= 64:
        return {"id": value["id"], "name": str(value.get("name") or "sweep")[:100],
                "values": value.get("values") if isinstance(value.get("values"), dict) else {}}
    return None
