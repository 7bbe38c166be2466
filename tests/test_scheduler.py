"""The scheduler stepped by hand over an in-memory store and a stand-in supervisor (fast unit
tests of its decisions; test_queue.py covers the same with real trainers)."""


from conftest import StandInSupervisor, Stepped, lock_is_free

from engine.config import JobConfig
from engine.console.metrics.log import MetricsLog
from engine.console.records.job import Job, JobStatus, change_status
from engine.console.records.store import MemoryJobStore
from engine.console.running.following import TrainerExit
from engine.console.scheduling.planner import queue_order
from engine.jobfiles import truncate_after


def make(tmp_path, gpus=()):
    stepped = Stepped(tmp_path, gpus)
    return stepped.store, stepped.supervisor, stepped.scheduler


def add(store, job_id, priority=0, max_retries=0):
    store.add(Job(job_id=job_id, name=job_id, priority=priority, seq=store.next_seq(),
                  config=JobConfig(max_retries=max_retries)))


def test_queue_order_is_priority_then_submit_order():
    jobs = [Job(job_id=i, name=i, config=JobConfig(), priority=p, seq=s)
            for i, p, s in [("a", 0, 1), ("b", 5, 2), ("c", 0, 3), ("d", 5, 4)]]
    jobs.append(Job(job_id="e", name="e", config=JobConfig(), priority=9, seq=5, status="paused"))
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


def test_an_owners_running_quota_holds_their_job_while_others_go_ahead(tmp_path):
    stepped = Stepped(tmp_path, gpus=[0, 1, 2], quotas={"bob": {"max_running_jobs": 1}})
    stepped.add("b1", owner="bob")
    stepped.add("b2", owner="bob")
    stepped.add("c1", owner="carol")
    stepped.step()
    assert stepped.started() == ["b1", "c1"]
    assert stepped.scheduler.waiting["b2"] == "quota max_running_jobs: bob has 1 running (quota 1)"


def test_the_head_of_the_queue_waits_for_devices_and_nobody_jumps_it(tmp_path):
    stepped = Stepped(tmp_path, gpus=[0, 1])
    stepped.add("one", gpus=1)
    stepped.step()
    stepped.add("pair", gpus=2)
    stepped.add("small", gpus=1)
    stepped.step()
    assert stepped.started() == ["one"]  # a GPU is free, but "small" may not pass "pair"
    assert stepped.scheduler.waiting == {"pair": "waiting for 2 free GPUs",
                                         "small": "behind the jobs above it"}


def test_a_preempting_job_pauses_the_lowest_priority_running_one(tmp_path):
    stepped = probed(tmp_path)
    stepped.add("low", priority=-1)
    stepped.step()
    stepped.add("urgent", priority=5, preempt=True)
    stepped.step()
    assert stepped.supervisor.stops == [("low", "pause")]
    assert stepped.store.get("low").preempted_by == "urgent"
    stepped.step()
    assert stepped.supervisor.stops == [("low", "pause")]  # asked once, not every round
    stepped.supervisor.exits.append(TrainerExit("low", JobStatus.PAUSED, 75))
    stepped.step()
    assert stepped.started() == ["low", "urgent"]
    assert stepped.store.get("low").status == JobStatus.QUEUED  # back in line by itself
    # Each launch and the pause request happened with the store lock free for API calls.
    assert stepped.supervisor.lock_free == [("launch", True), ("stop", True), ("launch", True)]


def test_a_pause_to_make_room_that_could_not_be_asked_is_asked_again(tmp_path):
    stepped = probed(tmp_path)
    stepped.add("low", priority=-1)
    stepped.step()
    stepped.add("urgent", priority=5, preempt=True)
    asked = stepped.supervisor.request_stop

    def failing(job_id, action, now=None):
        raise OSError(28, "No space left on device")
    stepped.supervisor.request_stop = failing
    stepped.step()  # could not ask: unmarked, so the next round does not wait for it
    assert stepped.store.get("low").preempted_by is None
    stepped.supervisor.request_stop = asked
    stepped.step()
    assert stepped.supervisor.stops == [("low", "pause")]
    assert stepped.store.get("low").preempted_by == "urgent"


def test_a_damaged_record_is_never_started(tmp_path):
    stepped = Stepped(tmp_path)
    stepped.add("broken")
    stepped.store.update("broken", damaged="priority: integer out of range")
    stepped.add("fine")
    stepped.step()
    assert stepped.started() == ["fine"]
    assert "damaged" in stepped.scheduler.waiting["broken"]


class FailingWrites:
    """A store whose writes fail while `full` is set, as on a full disk."""

    def __init__(self, store):
        self.store, self.full = store, False

    def __getattr__(self, name):
        return getattr(self.store, name)

    def update(self, job_id, **fields):
        if self.full:
            raise OSError(28, "No space left on device")
        return self.store.update(job_id, **fields)


def test_an_end_that_cannot_be_written_is_written_once_it_can(tmp_path):
    memory = MemoryJobStore()
    failing = FailingWrites(memory)
    stepped = Stepped(tmp_path, store=failing)
    stepped.add("a")
    stepped.add("b")
    stepped.step()
    failing.full = True
    stepped.supervisor.exits.append(TrainerExit("a", JobStatus.FAILED, 1, "no space left"))
    stepped.step()
    stepped.step()
    assert stepped.store.get("a").status == JobStatus.RUNNING  # not recorded yet...
    assert stepped.started() == ["a"]  # ...and nothing else starts meanwhile
    failing.full = False
    stepped.step()
    assert stepped.store.get("a").status == JobStatus.FAILED
    assert stepped.store.get("a").error == "no space left"
    assert stepped.started() == ["a", "b"]


# ---- starting a job never holds the store lock ------------------------------------------------


class ProbingSupervisor(StandInSupervisor):
    """Notes whether the store lock was free in each launch and stop request, and runs `during`
    (what a user does meanwhile) inside the launch."""

    def __init__(self, store, during=None, fail=None):
        super().__init__()
        self.store, self.during, self.fail = store, during, fail
        self.lock_free = []

    def launch(self, job, paths, env=None):
        self.lock_free.append(("launch", lock_is_free(self.store.lock)))
        if self.during:
            self.during(job.job_id)
        if self.fail:
            raise self.fail
        return super().launch(job, paths, env)

    def request_stop(self, job_id, action, now=None):
        self.lock_free.append(("stop", lock_is_free(self.store.lock)))
        super().request_stop(job_id, action, now)


def probed(tmp_path, **options) -> Stepped:
    stepped = Stepped(tmp_path)
    stepped.supervisor = ProbingSupervisor(stepped.store, **options)
    scheduler = stepped.scheduler
    for holder in (scheduler, scheduler.planner, scheduler.launcher):
        holder.supervisor = stepped.supervisor
    return stepped


def test_a_cancel_while_the_trainer_starts_withdraws_it_and_the_next_job_goes(tmp_path):
    stepped = probed(tmp_path)
    stepped.supervisor.during = lambda job_id: job_id == "a" and change_status(
        stepped.store, "a", JobStatus.CANCELLED)
    stepped.add("a")
    stepped.add("b")
    stepped.step()
    assert stepped.store.get("a").status == JobStatus.CANCELLED
    assert stepped.store.get("a").attempts == [] and stepped.store.get("a").pid is None
    assert stepped.supervisor.withdrawn == ["a"] and "a" not in stepped.supervisor.running
    assert stepped.devices.assigned == {}  # its claim on the CPU is given back
    stepped.step()
    assert stepped.started() == ["a", "b"]
    assert stepped.store.get("b").status == JobStatus.RUNNING


def test_a_pause_or_a_cancel_and_resume_while_it_starts_is_honoured(tmp_path):
    """Paused meanwhile: it stays paused. Cancelled and queued again meanwhile: the trainer
    started for the old request is withdrawn and the job starts afresh at the next round."""
    stepped = probed(tmp_path)

    def meddle(job_id):
        if job_id == "p":
            change_status(stepped.store, "p", JobStatus.PAUSED)
        elif len(stepped.supervisor.lock_free) == 2:
            change_status(stepped.store, "r", JobStatus.CANCELLED)
            change_status(stepped.store, "r", JobStatus.QUEUED, now=5000.0)

    stepped.supervisor.during = meddle
    stepped.add("p")
    stepped.add("r")
    stepped.step()
    stepped.step()
    assert stepped.store.get("p").status == JobStatus.PAUSED
    assert stepped.store.get("r").status == JobStatus.QUEUED
    assert stepped.supervisor.withdrawn == ["p", "r"]
    stepped.step()
    assert stepped.store.get("r").status == JobStatus.RUNNING
    assert stepped.store.get("r").attempt == 1


def test_a_trainer_that_cannot_start_fails_its_job_and_frees_the_devices(tmp_path):
    stepped = probed(tmp_path, fail=OSError(2, "No such file or directory", "sbatch"))
    stepped.add("a")
    stepped.step()
    job = stepped.store.get("a")
    assert job.status == JobStatus.FAILED and job.attempt == 1
    assert job.error.startswith("could not start the trainer: [Errno 2]")
    assert stepped.devices.assigned == {}


def test_status_listeners_run_once_the_outermost_holder_releases_the_lock(tmp_path):
    stepped = Stepped(tmp_path)
    stepped.add("a")
    heard = []
    listener = lambda job, previous: heard.append((job.status, previous,  # noqa: E731
                                                   lock_is_free(stepped.store.lock)))
    with stepped.store.lock:
        with stepped.store.lock:
            change_status(stepped.store, "a", JobStatus.RUNNING, [listener])
        change_status(stepped.store, "a", JobStatus.PAUSED, [listener])
        assert heard == []
    assert heard == [("running", "queued", True), ("paused", "running", True)]
    change_status(stepped.store, "a", JobStatus.QUEUED, [listener])
    assert heard[-1] == ("queued", "paused", True)
