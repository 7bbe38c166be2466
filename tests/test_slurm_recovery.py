"""Jobs on a Slurm cluster survive what clusters do to them: pause and resume through Slurm,
preemption (requeue) resumed by itself, a console restart, and Slurm's time limit. Exact
where it can be: resumed runs equal a straight run bitwise (CPU, fp32)."""

import os
import re
import subprocess

import psutil
import pytest
from conftest import losses
from harness import wait_until
from slurm_jobs import (
    EXACT,
    ClusterConsole,
    close_cluster_console,
    job_of,
    open_cluster_console,
    settled,
    squeue,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def console(slurm_cluster, tmp_path_factory):
    """One console for this file's tests on the shared cluster; the restart test restarts it."""
    shared = ClusterConsole(slurm_cluster,
                            tmp_path_factory.mktemp("slurm-console") / "workspace")
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def straight_run(console):
    """One uninterrupted run of EXACT, the reference of the exact test: submitted as it starts,
    it trains beside that test's own job."""
    return console.client.predict({**EXACT, "name": "straight"},
                                  api_name="/submit_job")["job_id"]


def straight_losses(console, straight_run: str) -> list[float]:
    """The per-step losses of the straight run, once it has ended."""
    job = settled(console.client, straight_run)
    assert job["status"] == "completed", job["error"]
    return losses(console.client.predict(straight_run, 0, api_name="/get_metrics"))


def preempt(cluster, slurm_id: str):
    """What a preemption by a higher-priority job does: requeue the running job (Slurm signals
    it first), then let it start again at once instead of after Slurm's requeue hold."""
    env = {**os.environ, **cluster.env}
    subprocess.run(["scontrol", "requeue", slurm_id], check=True, env=env)
    wait_until(lambda: squeue(cluster, "-j", slurm_id, "-o", "%T").strip() in
               ("PENDING", "REQUEUED"), 60, "Slurm to queue the job again")
    subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"],
                   capture_output=True, env=env)


def trained_after(log, marker: str) -> bool:
    """Whether the job's log shows a step trained after `marker` (the progress alone may be the
    checkpoint's, from before it)."""
    text = log.read_text()
    return marker in text and re.search(r"\nstep \d+/", text.split(marker, 1)[1]) is not None


# Its own deadlines (with the straight run and the time-limited job it may set up first) add up
# to more than the default 300 s: each wait, not pytest's timeout, says what did not happen.
@pytest.mark.timeout(1200)
def test_requeued_twice_then_paused_and_resumed_a_slurm_job_ends_exact(console, straight_run):
    """Preemption: `scontrol requeue` signals the running job, which checkpoints at the step's
    end; Slurm queues it again and it resumes from that checkpoint by itself. Twice; then its
    owner pauses it (the allocation is released) and resumes it (submitted again), and it ends
    bitwise like a straight run."""
    client, cluster = console.client, console.cluster
    job_id = client.predict({**EXACT, "name": "preempted"}, api_name="/submit_job")["job_id"]
    job = wait_until(lambda: (j := job_of(client, job_id))["progress"]["step"] >= 3 and j, 180,
                     "the job to reach step 3")
    slurm_id = job["cluster_job"]["id"]
    log = client.workspace / "jobs" / job_id / "training.log"
    for restart in (1, 2):
        preempt(cluster, slurm_id)
        wait_until(lambda restart=restart: trained_after(log, f"(restart {restart})"), 180,
                   f"the requeued job to resume (restart {restart}) and train a step")
    client.predict(job_id, api_name="/pause_job")
    job = settled(client, job_id)
    assert job["status"] == "paused", job["error"]
    assert job["cluster_job"]["id"] == slurm_id  # the same Slurm job, run three times
    client.predict(job_id, None, None, False, api_name="/resume_job")
    job = settled(client, job_id, 300)
    assert job["status"] == "completed", job["error"]
    assert job["attempt"] == 2 and job["cluster_job"]["id"] != slurm_id  # submitted again
    assert losses(client.predict(job_id, 0, api_name="/get_metrics")) == \
        straight_losses(console, straight_run)
    text = log.read_text()
    assert text.count("SIGTERM from the cluster: checkpointing") == 2, text
    assert "requeued by Slurm (restart 2)" in text


def test_a_restarted_console_reattaches_to_its_running_slurm_job(console):
    """The file's console is killed (as a crash would) and started again on its workspace."""
    client = console.client
    job_id = client.predict({"max_steps": 100000, "save_steps": 1000},
                            api_name="/submit_job")["job_id"]
    job = wait_until(lambda: (j := job_of(client, job_id))["progress"]["step"] >= 2 and j,
                     180, "the job to train")
    console.kill_and_restart()
    client = console.client
    again = job_of(client, job_id)
    assert again["status"] == "running"
    assert again["cluster_job"]["id"] == job["cluster_job"]["id"]
    step = again["progress"]["step"]
    wait_until(lambda: job_of(client, job_id)["progress"]["step"] > step + 5, 120,
               "the re-attached job's metrics to keep coming")
    client.predict(job_id, api_name="/cancel_job")  # and it is under control again
    assert settled(client, job_id, 60)["status"] == "cancelled"
    assert len(squeue(console.cluster, "-t", "all", "-n", f"traindeck-{job_id}",
                      "-o", "%i").split()) == 1  # submitted once


@pytest.fixture(scope="module", autouse=True)
def time_limited_job(slurm_cluster, tmp_path_factory):
    """A job on a console whose jobs get Slurm's shortest limit (one minute), started before the
    other tests of this file so that its minute runs beside them. Its trainer is stopped once it
    has a checkpoint: deaf to the notice (USR1) and to SIGTERM until Slurm's SIGKILL."""
    workspace = tmp_path_factory.mktemp("time-limit") / "workspace"
    process, client = open_cluster_console(slurm_cluster, workspace,
                                           "time_limit: '1'\nnotice_seconds: 10\n")
    try:
        job_id = client.predict({"max_steps": 100000, "save_steps": 5},
                                api_name="/submit_job")["job_id"]
        wait_until(lambda: job_of(client, job_id)["progress"]["step"] >= 6, 120,
                   "the time-limited job to pass its first checkpoint")
        job_file = str(workspace / "jobs" / job_id / "job.yaml")
        trainers = [p for p in psutil.process_iter(["cmdline"])
                    if job_file in " ".join(p.info["cmdline"] or []) and "engine.train" in
                    " ".join(p.info["cmdline"] or [])]
        assert trainers, "the time-limited job's trainer process was not found"
        for trainer in trainers:
            trainer.suspend()
        yield client, job_id
    finally:
        close_cluster_console(process)


def test_a_job_slurm_kills_at_its_time_limit_fails_with_slurms_reason(time_limited_job):
    """Slurm ends the stopped trainer at its limit (SIGCONT and SIGTERM, then SIGKILL): the job
    fails with Slurm's reason, not as a pause, and stays resumable."""
    client, job_id = time_limited_job
    job = settled(client, job_id, 150)
    assert job["status"] == "failed"
    assert job["error"].startswith("Slurm ended the job at its time limit"), job["error"]
    assert job["last_checkpoint"]  # resumable from there
