"""Shared fixtures: real engines on temporary workspaces, and helpers to wait on real jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from engine.api import Engine
from engine.job import JobStatus

REPO = Path(__file__).resolve().parent.parent
SETTLED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED}
# A short run of the tiny model with a rate high enough that its loss visibly falls.
QUICK = {"max_steps": 12, "learning_rate": 5e-3, "warmup_steps": 0}

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: fail fast, not slow


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until `predicate()` returns something true (and return it); past the deadline, fail
    saying what was awaited."""
    deadline = time.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.time() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)


def wait_for_status(engine: Engine, job_id: str, statuses=SETTLED, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = engine.get_job(job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {engine.get_job(job_id)['status']} after {timeout}s")


def wait_for_step(engine: Engine, job_id: str, step: int = 1, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = engine.get_job(job_id)
        if job["status"] == JobStatus.RUNNING and job["progress"]["step"] >= step:
            return job
        assert job["status"] in (JobStatus.QUEUED, JobStatus.RUNNING), (job["status"], job["error"])
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached step {step}")


def processes_of(job_file: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(job_file) in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def losses(metrics: list[dict]) -> list[float]:
    return [m["loss"] for m in metrics if "loss" in m]


def open_engine(workspace: Path) -> Engine:
    engine = Engine(workspace)
    engine.start()
    engine.scheduler.tick_s = 0.1
    return engine


def shutdown(engine: Engine) -> None:
    engine.supervisor.kill_all()
    engine.close()


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(tmp_path / "workspace")
    yield engine
    shutdown(engine)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """One run of the default preset, untouched, shared by the tests that need a finished job."""
    engine = open_engine(tmp_path_factory.mktemp("shared") / "workspace")
    submitted = time.time()
    job_id = engine.submit({})["job_id"]
    job = wait_for_status(engine, job_id)
    wall_s = time.time() - submitted
    yield engine, job, wall_s
    shutdown(engine)
