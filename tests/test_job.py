"""The job state machine: every legal move works, every illegal one is refused and changes
nothing."""

import itertools

import pytest

from engine.config import JobConfig
from engine.console.records.job import (
    TRANSITIONS,
    IllegalTransition,
    Job,
    JobStatus,
    can_transition,
    change_status,
)
from engine.console.records.store import MemoryJobStore

ALL = list(JobStatus)


def make_job(store, status=JobStatus.QUEUED):
    job = store.add(Job(job_id="j1", name="j", config=JobConfig(), status=status.value))
    return job


@pytest.mark.parametrize("current,target", list(itertools.product(ALL, ALL)))
def test_transition_table_is_enforced(current, target):
    store = MemoryJobStore()
    make_job(store, current)
    heard = []
    if target in TRANSITIONS[current]:
        job = change_status(store, "j1", target, [lambda j, prev: heard.append((prev, j.status))],
                            now=100.0)
        assert job.status == target
        assert store.get("j1").status == target
        assert heard == [(current.value, target.value)]
    else:
        with pytest.raises(IllegalTransition) as err:
            change_status(store, "j1", target, [lambda j, prev: heard.append(prev)])
        assert f"job j1 is {current.value}; it cannot become {target.value}" in str(err.value)
        assert store.get("j1").status == current  # unchanged
        assert heard == []


def test_design_transitions_exist():
    assert can_transition("queued", "running")
    for end in ("completed", "failed", "cancelled", "paused"):
        assert can_transition("running", end)
    assert can_transition("paused", "queued")
    assert can_transition("failed", "queued") and can_transition("cancelled", "queued")
    assert not can_transition("completed", "queued")
    assert not can_transition("queued", "completed")


def test_timestamps_follow_the_status():
    store = MemoryJobStore()
    make_job(store)
    running = change_status(store, "j1", "running", now=10.0, pid=123)
    assert running.started_at == 10.0 and running.pid == 123
    paused = change_status(store, "j1", "paused", now=20.0)
    assert paused.paused_at == 20.0 and paused.pid is None
    queued = change_status(store, "j1", "queued", now=30.0, resume_from="checkpoint-3")
    assert queued.queued_at == 30.0 and queued.paused_at is None
    assert queued.resume_from == "checkpoint-3"
    change_status(store, "j1", "running", now=40.0)
    failed = change_status(store, "j1", "failed", now=50.0, error="boom")
    assert failed.finished_at == 50.0 and failed.error == "boom"
    requeued = change_status(store, "j1", "queued", now=60.0)
    assert requeued.error is None and requeued.finished_at is None


def test_statuses_are_plain_strings():
    assert JobStatus.QUEUED == "queued"
    job = Job(job_id="x", name="x", config=JobConfig())
    assert job.to_dict()["status"] == "queued"
    assert Job.from_dict({**job.to_dict(), "unknown_future_field": 1}).job_id == "x"
