"""The scheduler stepped by hand over an in-memory store and a stand-in supervisor (fast unit
tests of its decisions; test_queue.py covers the same with real trainers)."""

from engine.job import Job, JobStatus
from engine.metrics import MetricsLog, truncate_after
from engine.scheduler import DevicePool, Scheduler, queue_order
from engine.store import MemoryJobStore
from engine.supervisor import TrainerExit
from engine.workspace import Workspace


class StandInSupervisor:
    def __init__(self):
        self.running, self.launched, self.exits = {}, [], []

    def launch(self, job, paths, env=None):
        self.launched.append((job.job_id, env))
        trainer = type("Trainer", (), {"pid": 1000 + len(self.launched)})()
        self.running[job.job_id] = trainer
        return trainer

    def poll(self, now=None):
        exits, self.exits = self.exits, []
        for finished in exits:
            self.running.pop(finished.job_id, None)
        return exits


def make(tmp_path, gpus=()):
    store = MemoryJobStore()
    supervisor = StandInSupervisor()
    scheduler = Scheduler(store, supervisor, Workspace(tmp_path), DevicePool(list(gpus)))
    return store, supervisor, scheduler


def add(store, job_id, priority=0, max_retries=0):
    store.add(Job(job_id=job_id, name=job_id, priority=priority, seq=store.next_seq(),
                  config={"max_retries": max_retries}))


def test_queue_order_is_priority_then_submit_order():
    jobs = [Job(job_id=i, name=i, config={}, priority=p, seq=s)
            for i, p, s in [("a", 0, 1), ("b", 5, 2), ("c", 0, 3), ("d", 5, 4)]]
    jobs.append(Job(job_id="e", name="e", config={}, priority=9, seq=5, status="paused"))
    assert [j.job_id for j in queue_order(jobs)] == ["b", "d", "a", "c"]


def test_one_job_at_a_time_without_a_gpu(tmp_path):
    store, supervisor, scheduler = make(tmp_path)
    for job_id, priority in [("a", 0), ("b", 1), ("c", 0)]:
        add(store, job_id, priority)
    scheduler.step(now=1.0)
    assert [j for j, _ in supervisor.launched] == ["b"]
    assert store.get("b").status == JobStatus.RUNNING and store.get("b").attempt == 1
    scheduler.step(now=2.0)
    assert len(supervisor.launched) == 1  # still busy
    supervisor.exits.append(TrainerExit("b", JobStatus.COMPLETED, 0, progress={"step": 7}))
    scheduler.step(now=3.0)
    assert store.get("b").status == JobStatus.COMPLETED
    assert store.get("b").progress["step"] == 7
    assert store.get("b").attempts[-1]["exit_code"] == 0
    assert [j for j, _ in supervisor.launched] == ["b", "a"]


def test_each_gpu_runs_a_job_with_its_own_visible_device(tmp_path):
    store, supervisor, scheduler = make(tmp_path, gpus=[0, 1])
    for job_id in "abc":
        add(store, job_id)
    scheduler.step(now=1.0)
    assert supervisor.launched == [("a", {"CUDA_VISIBLE_DEVICES": "0"}),
                                   ("b", {"CUDA_VISIBLE_DEVICES": "1"})]
    supervisor.exits.append(TrainerExit("a", JobStatus.FAILED, 1, "boom"))
    scheduler.step(now=2.0)
    assert supervisor.launched[-1] == ("c", {"CUDA_VISIBLE_DEVICES": "0"})


def test_a_crash_is_retried_up_to_max_retries(tmp_path):
    store, supervisor, scheduler = make(tmp_path)
    add(store, "a", max_retries=1)
    scheduler.step(now=1.0)
    supervisor.exits.append(TrainerExit("a", JobStatus.FAILED, -9, "killed"))
    scheduler.step(now=2.0)  # failed, re-queued, started again
    job = store.get("a")
    assert job.status == JobStatus.RUNNING and job.attempt == 2
    assert [a["status"] for a in job.attempts] == ["failed", "running"]
    supervisor.exits.append(TrainerExit("a", JobStatus.FAILED, -9, "killed again"))
    scheduler.step(now=3.0)
    assert store.get("a").status == JobStatus.FAILED  # retries used up
    assert store.get("a").error == "killed again"


def test_metrics_are_read_incrementally(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    assert log.refresh() == []
    with open(path, "w") as f:
        f.write('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # a line still being written
    assert [r["step"] for r in log.refresh()] == [1]
    with open(path, "a") as f:
        f.write('ss": 1.5}\n{"step": 3, "loss": 1.2}\n')
    assert [r["step"] for r in log.refresh()] == [2, 3]
    assert [r["step"] for r in log.since(1)] == [2, 3]
    assert log.last["loss"] == 1.2
    truncate_after(path, 2)  # a resume from checkpoint-2 rewrites the file
    with open(path, "a") as f:
        f.write('{"step": 3, "loss": 1.1}\n')
    log.refresh()
    assert [(r["step"], r["loss"]) for r in log.records] == [(1, 2.0), (2, 1.5), (3, 1.1)]


def test_a_step_is_looked_up_without_scanning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": {10 - s}}}\n' for s in (1, 2, 5, 9)))
    log = MetricsLog(path)
    log.refresh()
    assert log.at(5) == {"step": 5, "loss": 5}
    assert log.at(3) is None and log.at(10) is None
