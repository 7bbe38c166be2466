"""`python app.py repair-db`: rebuild the job database from the job folders.

Every job folder holds what its record needs: job.yaml (id, name, owner, priority, submit order,
config), exit.json (how the trainer last ended), metrics.jsonl (progress), checkpoints. The old
database file, if any, is kept beside the new one as jobs.json.damaged-<time>; nothing is deleted.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.console.metrics.log import MetricsLog
from engine.console.records.job import (
    JOB_ID,
    Job,
    JobRecords,
    JobStatus,
    change_status,
    readable_record,
    record_problems,
)
from engine.console.records.store import TinyDBJobStore
from engine.console.records.workspace import Workspace
from engine.console.running.exits import STATUS, ExitFacts, exit_cause, exit_message
from engine.console.running.following import DISK_FULL_WORDS, log_tail
from engine.console.running.trainers import is_alive
from engine.jobfiles import JobPaths, read_json, requested


@dataclass(frozen=True)
class Ending:
    """What a job folder says became of the job's last run: the status to reach through the
    state machine, when, and the fields that go with it (exit code, error, pid)."""

    status: JobStatus
    started_at: float
    finished_at: float
    fields: dict[str, Any] = field(default_factory=dict)


def rebuild_job(folder: Path) -> tuple[Job, Ending | None] | None:
    """A job's record from its folder alone, and how its last run ended (None: as the record
    says), or None when the folder holds no usable job. The record is the console's copy where
    there is one, else rebuilt from job.yaml, metrics and checkpoints; the ending comes from the
    trainer's exit record, its heartbeat and its log."""
    paths = JobPaths(folder)
    kept = read_json(paths.record)
    if isinstance(kept, dict) and kept.get("job_id") == folder.name:
        job = _checked_job(kept)
        # A copy that says running was written before the run ended (or while it goes on).
        return job, _ending(job, paths) if job.status == JobStatus.RUNNING else None
    job = _from_job_file(folder, paths)
    return (job, _ending(job, paths)) if job else None


def _checked_job(record: dict[str, Any]) -> Job:
    """The job a record describes; one with fields the record does not allow is read made safe
    and marked damaged (never started), as the store reads it."""
    problems = record_problems(record)
    return Job.from_dict(readable_record(record, problems) if problems else record)


def _from_job_file(folder: Path, paths: JobPaths) -> Job | None:
    """The record as submitted (queued), from job.yaml, with the progress its files show."""
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
    job = _checked_job({
        "job_id": job_id, "name": str(document.get("name") or job_id)[:200], "config": config,
        "owner": str(document.get("owner") or "local"),
        "priority": _int(document.get("priority", config.get("priority", 0))),
        "seq": max(_int(document.get("seq")), 0), "created_at": created, "queued_at": created,
        "shared": document.get("shared") is True, "sweep": _sweep(document.get("sweep"))})
    metrics = MetricsLog(paths.metrics)
    metrics.refresh()
    last = metrics.last or {}
    summary = read_json(paths.summary) or {}
    job.progress = {"step": last.get("step", 0), "total_steps": summary.get("max_steps"),
                    **({"loss": last["loss"]} if isinstance(last.get("loss"), float) else {})}
    latest = paths.latest_checkpoint()
    job.last_checkpoint = latest.name if latest else None
    return job


def _ending(job: Job, paths: JobPaths) -> Ending | None:
    """How the job's last run ended, read with the supervisor's own table of exit meanings
    (engine.console.running.exits), as a console re-attaching to the trainer would; None: it never
    started (it stays queued)."""
    ended = read_json(paths.exit_record) or {}
    code = ended.get("code") if type(ended.get("code")) is int else None
    beat = read_json(paths.heartbeat) or {}
    started = paths.log.stat().st_mtime if paths.log.exists() else job.created_at
    pid = beat.get("pid")
    if code is None and type(pid) is int and pid > 1 and is_alive(pid, paths):
        return Ending(JobStatus.RUNNING, started, started, {"pid": pid})  # it re-attaches
    if code is None and not paths.log.exists() and job.status != JobStatus.RUNNING:
        return None
    tail = log_tail(paths)
    facts = ExitFacts(code=-signal.SIGKILL if code is None else code, recorded=code is not None,
                      stop_action=requested(paths), attached=True, alive_at_attach=False,
                      disk_full=any(word in tail for word in DISK_FULL_WORDS))
    cause = exit_cause(facts)
    finished = (_number(ended.get("time")) or paths.exit_record.stat().st_mtime
                if code is not None else started)
    return Ending(STATUS.get(cause, JobStatus.FAILED), started, finished,
                  {"exit_code": facts.code, "error": exit_message(cause, facts, tail)})


def settle(store: JobRecords, job_id: str, ending: Ending) -> None:
    """Bring a written record to its ending through the one status writer, with the moves the
    console makes: queued -> running -> how it ended."""
    job = store.get(job_id)
    if job.status == JobStatus.QUEUED:
        job = change_status(store, job_id, JobStatus.RUNNING, now=ending.started_at,
                            attempt=max(job.attempt, 1))
    if ending.status == JobStatus.RUNNING:
        store.update(job_id, pid=ending.fields["pid"])
    elif ending.status != job.status:
        change_status(store, job_id, ending.status, now=ending.finished_at, **ending.fields)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _int(value: Any) -> int:
    plausible = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31
    return value if plausible else 0


def repair(workspace: Workspace) -> tuple[list[Job], list[Path], Path | None]:
    """Rebuild the database of a workspace no console holds. Returns the jobs written, the
    folders that held no usable job, and where the old file was kept (None: there was none)."""
    workspace.acquire()
    try:
        rebuilt, skipped = [], []
        for folder in workspace.job_folders():
            found = rebuild_job(folder)
            (rebuilt if found else skipped).append(found or folder)
        rebuilt.sort(key=lambda found: (found[0].seq or 0, found[0].created_at))
        for number, (job, _) in enumerate(rebuilt, start=1):
            job.seq = number  # submit order as it was, without gaps or clashes
        database = workspace.database
        kept = None
        if database.exists():
            kept = database.with_name(f"{database.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(database, kept)
        store = TinyDBJobStore(database)
        for job, ending in rebuilt:
            store.add(job)
            if ending:
                settle(store, job.job_id, ending)
        jobs = [store.get(job.job_id) for job, _ in rebuilt]
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
