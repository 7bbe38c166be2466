"""Both stores behave alike; the TinyDB store survives kill -9 at any moment."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from engine.config import JobConfig
from engine.console.records.job import Job
from engine.console.records.store import JobNotFound, MemoryJobStore, StoreLock, TinyDBJobStore


@pytest.fixture(params=["memory", "tinydb"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryJobStore()
    else:
        store = TinyDBJobStore(tmp_path / "jobs.json")
        yield store
        store.close()


def test_add_get_update_all(store):
    store.add(Job(job_id="a", name="first", config=JobConfig(learning_rate=0.1), seq=1,
                  resolved={"optim": "sgd"}))
    store.add(Job(job_id="b", name="second", config=JobConfig(), seq=2))
    job = store.get("a")
    job.resolved["optim"] = "adam"  # a returned copy: the stored job must not change
    assert store.get("a").resolved == {"optim": "sgd"}
    assert store.get("a").config.learning_rate == 0.1
    updated = store.update("a", status="running", progress={"step": 3, "total_steps": 9})
    assert updated.status == "running" and updated.progress["step"] == 3
    assert sorted(j.job_id for j in store.all()) == ["a", "b"]
    assert store.next_seq() == 3
    with pytest.raises(JobNotFound):
        store.get("missing")
    with pytest.raises(JobNotFound):
        store.update("missing", status="queued")
    with pytest.raises(ValueError):
        store.add(Job(job_id="a", name="again", config=JobConfig()))


def test_tinydb_store_persists_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "jobs.json"
    store = TinyDBJobStore(path)
    store.add(Job(job_id="a", name="first", config=JobConfig(lora_target_modules="q_proj,v_proj")))
    store.update("a", status="failed", error="boom")
    store.close()
    reopened = TinyDBJobStore(path)
    assert reopened.get("a").error == "boom"
    assert reopened.get("a").config == JobConfig(lora_target_modules="q_proj,v_proj")
    assert json.loads(path.read_text())  # plain, valid JSON on disk
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.json"]


WRITER = """
import sys
from engine.config import JobConfig
from engine.console.records.job import Job
from engine.console.records.store import TinyDBJobStore
store = TinyDBJobStore(sys.argv[1])
n = 0
while True:
    job_id = f"{sys.argv[2]}-{n}"
    store.add(Job(job_id=job_id, name=job_id, config=JobConfig(name="x" * 200), seq=n))
    print("ack", job_id, flush=True)            # acknowledged: add() returned
    store.update(job_id, status="running", pid=n)
    print("ack-update", job_id, flush=True)
    n += 1
"""


def test_sigkill_at_random_moments_loses_no_acknowledged_job(tmp_path):
    path = tmp_path / "jobs.json"
    rng = random.Random(7)
    acknowledged, updated = set(), set()
    for round_number in range(20):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"r{round_number}"],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True)
        # The kill lands at a random moment of the writing, however long the start took.
        first = writer.stdout.readline()
        assert first.startswith("ack "), f"the writer stopped before its first write: {first!r}"
        time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate()
        out = first + out
        complete = out[:out.rfind("\n") + 1]  # a line cut by the kill acknowledges nothing
        for line in complete.splitlines():
            kind, job_id = line.split()
            (acknowledged if kind == "ack" else updated).add(job_id)
        store = TinyDBJobStore(path)  # must load after every kill
        stored = {job.job_id: job for job in store.all()}
        store.close()
        assert acknowledged <= set(stored), acknowledged - set(stored)
        assert all(stored[j].status == "running" for j in updated)
    assert len(acknowledged) > 40  # the writers really wrote between the kills


def test_work_after_a_change_runs_each_piece_even_when_one_fails():
    """A listener that fails (a full disk, say) drops neither the next one nor the answer of the
    call whose change is already saved."""
    lock, done = StoreLock(), []

    def failing():
        raise OSError(28, "No space left on device")
    with lock:
        with lock:
            lock.after_release(failing)
            lock.after_release(lambda: done.append("notified"))
        assert done == []  # still held: the work waits for the outermost release
    assert done == ["notified"]
