"""The workspace's disk as part of the console's state (fast tier): the floor and how often the
disk is looked at, jobs held back below the floor, and a job whose end cannot be written shown
as it ended, with /health saying so. tests/test_disk_full.py fills a real disk."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import Stepped

from engine.config import JobConfig
from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER
from engine.console.records.job import Job, JobStatus, change_status
from engine.console.records.store import MemoryJobStore
from engine.console.running.following import TrainerExit
from engine.console.scheduling.disk import FULL_BYTES, GIB, DiskWatch
from ui.errors import as_gradio_errors
from ui.job_format import enabled_actions, header

MIB = 2**20


class FakeDisk:
    """What shutil.disk_usage would say, set by the test; counts how often it was asked."""

    def __init__(self, free: int, total: int = 100 * GIB):
        self.free, self.total, self.asked = free, total, 0

    def __call__(self, path: str) -> tuple[int, int, int]:
        self.asked += 1
        return self.total, self.total - self.free, self.free


class FillableStore(MemoryJobStore):
    """An in-memory store whose writes fail with ENOSPC while `full`, as the database's do."""

    full = False

    def update(self, job_id, **fields):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().update(job_id, **fields)


def test_the_default_floor_is_1_gib_or_twice_the_largest_checkpoint(tmp_path):
    watch = DiskWatch(tmp_path, usage=FakeDisk(50 * GIB))
    assert watch.floor_bytes() == GIB
    checkpoint = tmp_path / "checkpoint-5"
    (checkpoint / "sub").mkdir(parents=True)
    with open(checkpoint / "sub" / "weights", "wb") as f:
        f.truncate(700 * MIB)  # sparse: its size counts, not the blocks it takes
    watch.note_checkpoints([checkpoint])
    assert watch.floor_bytes() == 1400 * MIB
    assert DiskWatch(tmp_path, floor_bytes=5 * MIB).floor_bytes() == 5 * MIB  # --disk-floor-gb


def test_the_disk_is_looked_at_once_per_interval_however_often_asked(tmp_path):
    disk = FakeDisk(50 * GIB)
    watch = DiskWatch(tmp_path, interval_s=2.0, usage=disk)
    for now in (100.0, 100.5, 101.0, 101.9):
        assert watch.hold_reason(now) is None
    assert disk.asked == 1
    disk.free = 10 * MIB
    assert watch.hold_reason(101.99) is None  # not looked at again yet
    assert "disk is full" in watch.hold_reason(102.0)
    assert disk.asked == 2


def stepped_with_disk(tmp_path, free: int, store=None) -> tuple[Stepped, FakeDisk]:
    stepped = Stepped(tmp_path, store=store)
    disk = FakeDisk(free)
    stepped.scheduler.disk = DiskWatch(tmp_path, interval_s=0, usage=disk)
    return stepped, disk


def test_no_job_starts_below_the_floor_and_each_waits_saying_why(tmp_path):
    stepped, disk = stepped_with_disk(tmp_path, free=GIB - 1)
    stepped.add("a")
    stepped.add("b")
    stepped.step()
    assert stepped.started() == []
    for job_id in "ab":
        assert stepped.store.get(job_id).status == JobStatus.QUEUED
        reason = stepped.scheduler.waiting[job_id]
        assert "held back" in reason and "below the floor of 1.0 GiB" in reason
    disk.free = 2 * GIB  # space came back: the queue goes on by itself
    stepped.step()
    assert stepped.started() == ["a"]
    assert stepped.scheduler.waiting["b"] == "waiting for the CPU"


def test_a_full_disk_holds_back_every_job_and_says_it_is_full(tmp_path):
    stepped, _ = stepped_with_disk(tmp_path, free=FULL_BYTES - 1)
    stepped.add("a")
    stepped.step()
    assert stepped.started() == []
    assert "the workspace's disk is full" in stepped.scheduler.waiting["a"]


def engine_on_a_disk(tmp_path, free: int) -> tuple[Engine, FillableStore, FakeDisk]:
    store, disk = FillableStore(), FakeDisk(free)
    engine = Engine(tmp_path / "workspace", store=store, warm_start=False).open()
    engine.disk.usage, engine.disk.interval_s = disk, 0
    return engine, store, disk


def running_job(store: FillableStore, job_id: str) -> None:
    store.add(Job(job_id=job_id, name=job_id, config=JobConfig(), seq=store.next_seq(),
                  attempt=1, attempts=[{"attempt": 1, "status": "running", "started_at": 1.0}]))
    change_status(store, job_id, JobStatus.RUNNING, now=1.0)


def test_a_job_whose_end_cannot_be_written_is_not_shown_running(tmp_path, monkeypatch):
    engine, store, disk = engine_on_a_disk(tmp_path, free=4096)
    try:
        running_job(store, "dead")
        store.add(Job(job_id="next", name="next", config=JobConfig(), seq=store.next_seq()))
        store.full = True
        ended = TrainerExit("dead", JobStatus.FAILED.value, 1,
                            "no space left on device (ENOSPC): the disk holding the workspace "
                            "is full; the trainer exited with code 1.")
        # The trainer's exit, reported once (as the supervisor does); nothing is launched.
        reported = [[ended]]
        monkeypatch.setattr(engine.supervisor, "poll",
                            lambda now=None: reported.pop() if reported else [])
        launched = []
        monkeypatch.setattr(engine.supervisor, "launch", lambda job, paths, env=None: (
            launched.append(job.job_id) or SimpleNamespace(pid=4242, job_fields=dict)))
        for _ in range(3):  # the scheduler retries every round; the disk stays full
            engine.scheduler.step()
        assert store.get("dead").status == JobStatus.RUNNING  # what the database still says...
        shown = engine.views.get_job(LOCAL_USER, "dead")  # ...is not what the console shows
        assert shown["status"] == "failed" and shown["error"].startswith("no space left")
        assert "cannot be written" in shown["unrecorded"]
        [row] = [j for j in engine.views.list_jobs(LOCAL_USER) if j["job_id"] == "dead"]
        assert row["status"] == "failed" and row["unrecorded"]
        assert "held back" in engine.views.get_job(LOCAL_USER, "next")["waiting"]

        health = engine.health()
        assert health["status"] == "disk full" and health["running"] == 0
        message = health["disk"]["message"]
        assert "disk is full" in message and "Nothing can be recorded" in message
        assert "Ended but not recorded yet: dead" in message
        assert "1 queued job held back" in message

        store.full, disk.free = False, 50 * GIB  # space returns: everything is written down
        engine.scheduler.step()
        recorded = store.get("dead")
        assert recorded.status == JobStatus.FAILED and recorded.error == ended.error
        assert recorded.attempts[-1]["status"] == "failed" and recorded.exit_code == 1
        assert engine.views.get_job(LOCAL_USER, "dead")["unrecorded"] is None
        assert launched == ["next"]  # and the queue goes on
        assert engine.health()["status"] == "ok" and engine.health()["disk"]["message"] is None
    finally:
        engine.supervisor.kill_all()
        engine.close()


def test_health_says_when_the_disk_is_below_its_floor(tmp_path):
    engine, _, _ = engine_on_a_disk(tmp_path, free=512 * MIB)
    try:
        health = engine.health()
        assert health["status"] == "disk low"
        assert health["disk"]["floor_bytes"] == GIB and health["disk"]["free_bytes"] == 512 * MIB
        assert "below the floor of 1.0 GiB" in health["disk"]["message"]
        assert "--disk-floor-gb" in health["disk"]["message"]
    finally:
        engine.close()


def test_a_job_not_recorded_yet_says_so_and_offers_no_action():
    job = {"job_id": "j", "name": "n", "owner": "local", "status": "failed", "priority": 0,
           "attempt": 1, "error": "no space left on device (ENOSPC)", "config": {},
           "checkpoints": [{"name": "checkpoint-5"}], "unrecorded": "its trainer ended but ..."}
    assert "Not recorded yet" in header(job, LOCAL_USER)
    assert enabled_actions(job, LOCAL_USER) == set()


def test_an_action_refused_by_a_full_disk_is_no_internal_error():
    @as_gradio_errors
    def cancel_job():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(gr.Error) as refused:
        cancel_job()
    assert "internal error" not in refused.value.message
    assert "disk is full (No space left on device)" in refused.value.message
