"""The Slurm executor's pure parts: cluster.yaml checking, the sbatch options and batch script a
job becomes, and how a Slurm ending becomes the job's status and error."""

import json
import os
import subprocess

import pytest

from engine.config import ConfigError, JobConfig
from engine.console.records.job import Job
from engine.console.running import slurm
from engine.console.running.cluster import ClusterSettings
from engine.console.running.exits import ExitCause, ExitFacts, exit_cause, exit_message
from engine.console.running.slurm import (
    SlurmClient,
    SlurmState,
    SlurmSupervisor,
    SlurmTrainer,
    batch_script,
    sbatch_options,
)
from engine.jobfiles import STOPPED_FOR_NOTICE, STOPPED_FOR_REQUEST, JobPaths, read_json


def job(priority=0, **config) -> Job:
    return Job(job_id="20261130-000000-abcd", name="n", config=JobConfig(**config), owner="bob",
               priority=priority)


@pytest.mark.parametrize("data, words", [
    ({"partiton": "gpu"}, "cluster.yaml: partiton: unknown field; allowed: partition, account"),
    ({"partition": "gpu --uid=0"}, "partition: must be a Slurm name"),
    ({"time_limit": "forever"}, "time_limit: must be minutes, H:MM:SS or D-HH:MM:SS"),
    ({"sbatch_extra": ["--constraint=a100", "rm -rf /"]}, "each starting with --"),
    ({"sbatch_extra": ["--x\n#SBATCH --uid=0"]}, "each starting with --"),
    ({"notice_seconds": 1}, "notice_seconds: must be a whole number from 10 to 86400, got 1"),
])
def test_cluster_settings_refuse_what_sbatch_should_not_see(tmp_path, data, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ClusterSettings.checked(data, "cluster.yaml")


def test_cluster_yaml_and_flags_combine(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: gpu\naccount: team\nsbatch_extra: ['--constraint=a100']\n")
    settings = ClusterSettings.load(path, {"partition": "debug", "qos": None})
    assert (settings.partition, settings.account) == ("debug", "team")
    assert settings.sbatch_extra == ("--constraint=a100",)


def test_a_job_becomes_sbatch_options_that_keep_its_priority_and_resources(tmp_path):
    settings = ClusterSettings(partition="gpu", time_limit="2:00:00", notice_seconds=90)
    paths = JobPaths(tmp_path / "job")
    low = sbatch_options(job(priority=0, gpus=2, nodes=3), paths, settings)
    high = sbatch_options(job(priority=5), paths, settings)
    assert {"--gres=gpu:2", "--nodes=3", "--partition=gpu", "--time=2:00:00", "--requeue",
            "--signal=B:USR1@90"} <= set(low)
    def nice(options):
        return next(int(o.split("=")[1]) for o in options if o.startswith("--nice="))

    assert nice(high) < nice(low)  # the higher TrainDeck priority goes first in Slurm too
    one = batch_script(job(), paths, settings)
    assert "-m engine.train" in one and "torch.distributed.run" not in one
    several = batch_script(job(gpus=2, nodes=2), paths, settings)
    assert "srun" in several and "--nproc_per_node=2" in several and "$SLURM_NNODES" in several


def test_an_ending_by_slurm_without_an_exit_record_names_slurms_reason(tmp_path):
    paths = JobPaths(tmp_path)
    trainer = SlurmTrainer("j", paths, 0, 600, 0.0, slurm_id="7")
    trainer.note(SlurmState("TIMEOUT", exit_code="0:15"), 1.0)
    code = trainer.poll_exit()
    assert code == -15
    facts = ExitFacts(code=code, cluster_reason=trainer.cluster_reason())
    assert exit_cause(facts) == ExitCause.CLUSTER
    assert exit_message(ExitCause.CLUSTER, facts).startswith(
        "Slurm ended the job at its time limit. Resume continues from the last checkpoint.")
    paths.exit_record.write_text('{"pid": 99, "code": 75}')  # it checkpointed on the notice
    assert trainer.poll_exit() == 75
    facts = ExitFacts(code=75, cluster_reason=trainer.cluster_reason())
    assert exit_cause(facts) == ExitCause.CLUSTER  # still Slurm's ending, not a user's pause
    paused = ExitFacts(code=75, cluster_reason=trainer.cluster_reason(), stop_action="pause")
    assert exit_cause(paused) == ExitCause.PAUSED  # a pause the user asked for stays a pause
    paths.exit_record.write_text('{"pid": 99, "code": 0}')
    assert trainer.poll_exit() == 0  # the facts are those of the record read at the ending
    assert trainer.cluster_reason() is None


def test_a_pending_slurm_job_is_not_a_hung_trainer(tmp_path):
    trainer = SlurmTrainer("j", JobPaths(tmp_path), 0, 60, 0.0, slurm_id="7")
    trainer.note(SlurmState("PENDING", "Resources"), 1000.0)
    assert trainer.poll_exit() is None
    assert trainer.last_progress_time() > 1000  # counted from now while it waits


def test_several_nodes_are_refused_on_a_console_without_a_cluster(idle_engine, team):
    alice = team.get("alice")
    with pytest.raises(ConfigError, match="nodes: this console runs jobs on this machine only"):
        idle_engine.jobs.submit(alice, {"nodes": 2})
    with pytest.raises(ConfigError, match="nodes"):
        idle_engine.jobs.submit(alice, {"nodes": 65})  # bounded like every number
    assert idle_engine.views.list_jobs(alice) == []  # nothing was stored


# ---- a checkpoint on Slurm's notice is never a pause ------------------------------------------


class FakeSlurm:
    """Slurm's answers, one per query, as a test scripts them."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def states(self, ids):
        state = self.answers.pop(0)
        return {} if state is None else {ids[0]: state}

    def cancel(self, slurm_id):
        pass


def followed(tmp_path, client):
    supervisor = SlurmSupervisor(tmp_path / "cache", ClusterSettings(), client=client)
    running = job(max_steps=60)
    running.cluster_job = {"scheduler": "slurm", "id": "7"}
    paths = JobPaths(tmp_path / "job")
    paths.root.mkdir()
    supervisor.attach(running, paths)
    return supervisor, paths


NOTICED = {"pid": 4321, "code": 75, "stopped_for": STOPPED_FOR_NOTICE, "notice": "SIGTERM"}


@pytest.mark.parametrize("ended", ["FAILED", "COMPLETED"])
def test_a_checkpoint_on_slurms_notice_is_followed_through_a_requeue_and_never_paused(
        tmp_path, ended):
    """The trainer checkpointed and stopped on Slurm's SIGTERM (exit 75, as a pause does) and
    recorded why. While Slurm requeues the job the console follows on; however the console then
    finds it ended (a state Slurm gives no reason for), it is the cluster's doing: failed with
    that cause, resumable, never a person's pause."""
    answers = [SlurmState(s) for s in ("RUNNING", "COMPLETING", "REQUEUED", "PENDING")]
    supervisor, paths = followed(tmp_path, FakeSlurm(*answers, SlurmState(ended, "", "", "75:0")))
    paths.exit_record.write_text(json.dumps(NOTICED))
    for round_ in range(len(answers)):
        assert supervisor.poll(now=10.0 * (round_ + 1)) == []
    [finished] = supervisor.poll(now=100.0)
    assert finished.status == "failed" and finished.exit_code == 75
    assert finished.error.startswith("the cluster stopped the job (SIGTERM) and did not queue it "
                                     "again; it saved a checkpoint first. Resume continues")


def test_an_exit_record_removed_by_slurms_restart_while_read_keeps_its_notice(tmp_path,
                                                                             monkeypatch):
    """The ending is judged on one reading of exit.json: the run Slurm restarts removes the file
    (batch script) right after the console first read its code, and the stop on Slurm's notice
    is still the cluster's doing, never a pause."""
    supervisor, paths = followed(tmp_path, FakeSlurm(SlurmState("COMPLETED", "", "", "75:0")))
    paths.exit_record.write_text(json.dumps(NOTICED))

    def read_then_restart(path):
        found = read_json(path)
        path.unlink(missing_ok=True)  # the restarted run's `rm -f`, landing between two reads
        return found

    monkeypatch.setattr(slurm, "read_json", read_then_restart)
    [finished] = supervisor.poll(now=100.0)
    assert finished.status == "failed" and finished.exit_code == 75
    assert finished.error.startswith("the cluster stopped the job (SIGTERM)"), finished.error


def test_a_pause_record_with_the_same_exit_stays_a_pause(tmp_path):
    supervisor, paths = followed(tmp_path, FakeSlurm(SlurmState("FAILED", "", "", "75:0")))
    supervisor.request_stop("20261130-000000-abcd", "pause")
    paths.exit_record.write_text(json.dumps({**NOTICED, "stopped_for": STOPPED_FOR_REQUEST}))
    [finished] = supervisor.poll(now=100.0)
    assert finished.status == "paused" and finished.error is None


class GarbledScontrol(SlurmClient):
    """squeue lists nothing and scontrol answers without a JobState (a slurmctld under load)."""

    def _run(self, *argv):
        return "" if argv[0] == "squeue" else "slurm_load_jobs error: Socket timed out\n"


def test_an_answer_without_a_job_state_concludes_nothing(tmp_path):
    assert GarbledScontrol().states(["7"]) == {}  # absent (a missed round), not "UNKNOWN"
    supervisor, paths = followed(tmp_path, GarbledScontrol())
    paths.exit_record.write_text(json.dumps(NOTICED))
    assert supervisor.poll(now=10.0) == []
    assert supervisor.running["20261130-000000-abcd"].missing_rounds == 1


@pytest.mark.slow  # runs bash
def test_a_run_slurm_restarts_drops_the_stopped_runs_exit_record(tmp_path):
    """The batch script itself, run by bash as Slurm runs it on a restart (the trainer replaced
    by `true`): the record of the run Slurm stopped must not speak for the new one."""
    paths = JobPaths(tmp_path / "job")
    paths.root.mkdir()
    paths.exit_record.write_text(json.dumps(NOTICED))
    script = tmp_path / "slurm-job.sh"
    script.write_text(batch_script(job(), paths, ClusterSettings(python="true")))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "SLURM_RESTART_COUNT": "1", "SLURM_JOB_ID": "7"})
    assert done.returncode == 0, done.stderr
    assert not paths.exit_record.exists()
    assert "requeued by Slurm (restart 1)" in paths.log.read_text()
