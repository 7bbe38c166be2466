"""The console as a front end for a Slurm cluster: a real single-node Slurm (slurmctld, slurmd
and munged started by a session fixture, two GPUs faked as gres devices) and `app.py --cluster
slurm` driven through gradio_client. Jobs become sbatch submissions running the same
`python -m engine.train`; the console follows them through the job folder and Slurm's tools."""

import os
import signal
import subprocess

import psutil
import pytest
from gradio_client import Client

from conftest import losses, wait_until
from harness import start_console, stop_console

pytestmark = pytest.mark.slow
EXACT = {"max_steps": 24, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4,
         "learning_rate": 5e-3, "warmup_steps": 0, "lora_dropout": 0.1, "save_steps": 100}


@pytest.fixture(scope="module")
def cluster_console(slurm_cluster, tmp_path_factory):
    workspace = tmp_path_factory.mktemp("slurm-console") / "workspace"
    workspace.mkdir()
    (workspace / "cluster.yaml").write_text("partition: debug\ntime_limit: '30'\n")
    process, url = start_console(workspace, "--cluster", "slurm", env=slurm_cluster.env)
    client = Client(url, verbose=False)
    client.workspace = workspace
    yield client, slurm_cluster
    stop_console(process)


def job_of(client, job_id):
    return client.predict(job_id, api_name="/get_job")


def settled(client, job_id, timeout=180):
    return wait_until(lambda: (j := job_of(client, job_id))["status"] not in ("queued", "running")
                      and j, timeout, f"job {job_id} to end")


def squeue(cluster, *args):
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True,
                          env={**os.environ, **cluster.env}).stdout


def test_a_default_job_runs_as_a_slurm_job_and_streams_its_metrics(cluster_console):
    client, cluster = cluster_console
    job_id = client.predict({"max_steps": 30, "save_steps": 100}, api_name="/submit_job")["job_id"]
    running = wait_until(lambda: (j := job_of(client, job_id))["progress"]["step"] >= 1 and j, 120,
                         "the Slurm job's first step to reach the console")
    slurm_id = running["cluster_job"]["id"]
    assert running["progress"]["cluster"]["state"] == "RUNNING"
    assert f"traindeck-{job_id}" in squeue(cluster, "-j", slurm_id, "-o", "%j")
    live = client.predict(job_id, 0, api_name="/get_metrics")
    job = settled(client, job_id)
    assert job["status"] == "completed", job["error"]
    metrics = client.predict(job_id, 0, api_name="/get_metrics")
    assert len(live) < 30 and [m["step"] for m in metrics] == list(range(1, 31))
    assert job["cluster_job"]["id"] == slurm_id


def test_two_jobs_wanting_both_gpus_run_one_after_the_other(cluster_console):
    client, _ = cluster_console
    first = client.predict({**EXACT, "gpus": 2, "max_steps": 40, "name": "first"},
                           api_name="/submit_job")["job_id"]
    second = client.predict({**EXACT, "gpus": 2, "max_steps": 2, "name": "second"},
                            api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(client, first)["progress"]["step"] >= 1, 180,
               "the first 2-GPU job to train")
    pending = wait_until(lambda: (j := job_of(client, second))["progress"].get("cluster", {})
                         .get("reason") == "Resources" and j, 60,
                         "the second job to wait in Slurm for resources")
    assert pending["progress"]["cluster"]["state"] == "PENDING"
    assert settled(client, first, 300)["status"] == "completed"
    assert settled(client, second, 300)["status"] == "completed"
    # Each ran as two gloo ranks (srun, then torchrun) in one allocation; one metrics stream.
    log = (client.workspace / "jobs" / first / "training.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    steps = [m["step"] for m in client.predict(first, 0, api_name="/get_metrics")]
    assert steps == list(range(1, 41))


def test_cancel_a_pending_and_a_running_slurm_job(cluster_console):
    client, cluster = cluster_console
    running = client.predict({**EXACT, "gpus": 2, "max_steps": 100000, "name": "long"},
                             api_name="/submit_job")["job_id"]
    waiting = client.predict({**EXACT, "gpus": 2, "name": "waits"},
                             api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(client, running)["progress"]["step"] >= 1, 180,
               "the long job to train")
    wait_until(lambda: job_of(client, waiting)["progress"].get("cluster", {}).get("state")
               == "PENDING", 60, "the second job to be pending in Slurm")
    client.predict(waiting, api_name="/cancel_job")
    assert settled(client, waiting, 60)["status"] == "cancelled"
    client.predict(running, api_name="/cancel_job")
    assert settled(client, running, 60)["status"] == "cancelled"
    assert squeue(cluster).strip() == ""  # nothing left in Slurm


def test_pause_then_resume_on_slurm_equals_a_straight_run(cluster_console):
    client, _ = cluster_console
    straight = client.predict({**EXACT, "name": "straight"}, api_name="/submit_job")["job_id"]
    assert settled(client, straight)["status"] == "completed"
    paused = client.predict({**EXACT, "name": "paused"},
                            api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(client, paused)["progress"]["step"] >= 3, 180,
               "the job to reach step 3")
    client.predict(paused, api_name="/pause_job")
    job = settled(client, paused)
    assert job["status"] == "paused", job["error"]
    client.predict(paused, None, None, False, api_name="/resume_job")
    job = settled(client, paused)
    assert job["status"] == "completed", job["error"]
    assert job["attempt"] == 2
    assert losses(client.predict(paused, 0, api_name="/get_metrics")) == \
        losses(client.predict(straight, 0, api_name="/get_metrics"))


def test_a_job_requeued_by_slurm_resumes_from_its_checkpoint_by_itself(cluster_console):
    """Preemption: `scontrol requeue` signals the running job, which checkpoints at the step's
    end; Slurm queues it again and it resumes from that checkpoint, ending bitwise like a
    straight run."""
    client, cluster = cluster_console
    straight = client.predict({**EXACT, "name": "straight run"}, api_name="/submit_job")["job_id"]
    assert settled(client, straight)["status"] == "completed"
    requeued = client.predict({**EXACT, "name": "preempted"}, api_name="/submit_job")["job_id"]
    job = wait_until(lambda: (j := job_of(client, requeued))["progress"]["step"] >= 3 and j, 180,
                     "the job to reach step 3")
    slurm_id = job["cluster_job"]["id"]
    subprocess.run(["scontrol", "requeue", slurm_id], check=True,
                   env={**os.environ, **cluster.env})
    # Slurm holds a requeued job back (BeginTime) for a while; an admin may let it go at once.
    wait_until(lambda: squeue(cluster, "-j", slurm_id, "-o", "%T").strip() in
               ("PENDING", "REQUEUED"), 60, "Slurm to queue the job again")
    subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"],
                   capture_output=True, env={**os.environ, **cluster.env})
    job = settled(client, requeued, 300)
    assert job["status"] == "completed", job["error"]
    assert losses(client.predict(requeued, 0, api_name="/get_metrics")) == \
        losses(client.predict(straight, 0, api_name="/get_metrics"))
    assert job["cluster_job"]["id"] == slurm_id  # the same Slurm job, run again
    log = (client.workspace / "jobs" / requeued / "training.log").read_text()
    assert "SIGTERM from the cluster" in log and "requeued by Slurm (restart 1)" in log


def test_a_restarted_console_reattaches_to_its_running_slurm_job(slurm_cluster, tmp_path):
    workspace = tmp_path / "workspace"
    process, url = start_console(workspace, "--cluster", "slurm", env=slurm_cluster.env)
    try:
        client = Client(url, verbose=False)
        job_id = client.predict({"max_steps": 100000, "save_steps": 1000},
                                api_name="/submit_job")["job_id"]
        job = wait_until(lambda: (j := job_of(client, job_id))["progress"]["step"] >= 2 and j,
                         180, "the job to train")
        process.send_signal(signal.SIGKILL)
        process.wait()
        process, url = start_console(workspace, "--cluster", "slurm", env=slurm_cluster.env)
        client = Client(url, verbose=False)
        again = job_of(client, job_id)
        assert again["status"] == "running"
        assert again["cluster_job"]["id"] == job["cluster_job"]["id"]
        step = again["progress"]["step"]
        wait_until(lambda: job_of(client, job_id)["progress"]["step"] > step + 5, 120,
                   "the re-attached job's metrics to keep coming")
        client.predict(job_id, api_name="/cancel_job")  # and it is under control again
        assert settled(client, job_id, 60)["status"] == "cancelled"
        assert len(squeue(slurm_cluster, "-t", "all", "-n", f"traindeck-{job_id}",
                          "-o", "%i").split()) == 1  # submitted once
    finally:
        stop_console(process)


def test_a_job_slurm_kills_at_its_time_limit_fails_with_slurms_reason(slurm_cluster, tmp_path):
    """A trainer that cannot answer the notice ahead of the limit (stopped here) is ended by
    Slurm at its one-minute limit (SIGCONT and SIGTERM, then SIGKILL): the job fails with
    Slurm's reason, not as a pause, and stays resumable."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "cluster.yaml").write_text("time_limit: '1'\nnotice_seconds: 10\n")
    process, url = start_console(workspace, "--cluster", "slurm", env=slurm_cluster.env)
    try:
        client = Client(url, verbose=False)
        job_id = client.predict({"max_steps": 100000, "save_steps": 5},
                                api_name="/submit_job")["job_id"]
        wait_until(lambda: job_of(client, job_id)["progress"]["step"] >= 6, 120,
                   "the job to pass its first checkpoint")
        job_file = str(workspace / "jobs" / job_id / "job.yaml")
        trainers = [p for p in psutil.process_iter(["cmdline"])
                    if job_file in " ".join(p.info["cmdline"] or []) and "engine.train" in
                    " ".join(p.info["cmdline"] or [])]
        assert trainers, "the trainer process was not found"
        for trainer in trainers:
            trainer.suspend()  # deaf to USR1 and TERM until Slurm's SIGKILL
        job = settled(client, job_id, 150)
        assert job["status"] == "failed"
        assert job["error"].startswith("Slurm ended the job at its time limit"), job["error"]
        assert job["last_checkpoint"]  # resumable from there
    finally:
        stop_console(process)
