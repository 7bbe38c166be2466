"""The supervisor's clock-driven decisions, on stand-in trainers (no process): a silent heartbeat
past the job's timeout, and a cancel not honoured within the grace period."""

import json

from engine.console.records.job import JobStatus
from engine.console.running.following import CANCEL_GRACE_S
from engine.console.running.supervisor import Supervisor
from engine.console.running.trainers import Trainer
from engine.jobfiles import JobPaths


class StandInTrainer(Trainer):
    """Runs until killed; killing it ends it with SIGKILL."""

    killed = 0

    def poll_exit(self):
        return -9 if self.killed else None

    def kill(self):
        self.killed += 1

    def reap_after_kill(self):
        return -9


def follow(tmp_path, started=100.0, timeout_s=60.0):
    paths = JobPaths(tmp_path / "job")
    paths.root.mkdir()
    supervisor = Supervisor(tmp_path / "cache")
    trainer = StandInTrainer("job", paths, pid=0, timeout_s=timeout_s, started_at=started)
    supervisor.running["job"] = trainer
    return supervisor, trainer, paths


def test_a_silent_trainer_is_killed_after_its_timeout_and_the_job_fails(tmp_path):
    supervisor, trainer, paths = follow(tmp_path)
    assert supervisor.poll(now=150.0) == [] and not trainer.killed
    paths.heartbeat.write_text(json.dumps({"time": 150.0, "step": 3, "phase": "training"}))
    assert supervisor.poll(now=200.0) == []  # the beat at 150 moved the deadline to 210
    [ended] = supervisor.poll(now=211.0)
    assert trainer.killed and ended.status == JobStatus.FAILED
    assert ended.error.startswith("timed out after 1 min without progress")
    assert ended.progress["step"] == 3 and "job" not in supervisor.running


def test_a_cancel_not_honoured_in_time_is_enforced(tmp_path):
    supervisor, trainer, paths = follow(tmp_path, timeout_s=3600)
    supervisor.request_stop("job", "cancel", now=1000.0)
    assert paths.request_file("cancel").exists()  # the trainer is asked first
    supervisor.request_stop("job", "pause", now=1001.0)  # a cancel is never downgraded
    assert supervisor.poll(now=1000.0 + CANCEL_GRACE_S - 1) == []
    [ended] = supervisor.poll(now=1000.0 + CANCEL_GRACE_S + 1)
    assert trainer.killed and ended.status == JobStatus.CANCELLED and ended.error is None
