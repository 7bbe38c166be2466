"""The console as a front end for a Slurm cluster: a real single-node Slurm (slurmctld, slurmd
and munged started by a session fixture, two GPUs faked as gres devices) and `app.py --cluster
slurm` driven through gradio_client. Jobs become sbatch submissions running the same
`python -m engine.train`; the console follows them through the job folder and Slurm's tools.
Recovery (pause, requeue, restarts, time limits) is in test_slurm_recovery.py."""

import os
import shutil
import time

import pytest
from harness import wait_until
from slurm_jobs import EXACT, close_cluster_console, job_of, open_cluster_console, settled, squeue

from engine.jobfiles import JobPaths

pytestmark = pytest.mark.slow


def test_a_default_job_runs_as_a_slurm_job_and_streams_its_metrics(slurm_cluster, tmp_path):
    """Looked at while it runs: its trainer holds after step 2 until the test lets it go on."""
    process, client = open_cluster_console(slurm_cluster, tmp_path / "workspace",
                                           env={"TRAINDECK_FAULTS": "hold-at-step:2"})
    try:
        job_id = client.predict({"max_steps": 30, "save_steps": 100},
                                api_name="/submit_job")["job_id"]
        running = wait_until(lambda: (j := job_of(client, job_id))["progress"]["step"] >= 2
                             and j, 120, "the Slurm job's second step to reach the console")
        slurm_id = running["cluster_job"]["id"]
        assert running["status"] == "running"
        assert running["progress"]["cluster"]["state"] == "RUNNING"
        assert f"traindeck-{job_id}" in squeue(slurm_cluster, "-j", slurm_id, "-o", "%j")
        live = client.predict(job_id, 0, api_name="/get_metrics")
        assert [m["step"] for m in live] == [1, 2]  # streamed while the job runs
        JobPaths(client.workspace / "jobs" / job_id).hold_release.touch()
        job = settled(client, job_id)
        assert job["status"] == "completed", job["error"]
        metrics = client.predict(job_id, 0, api_name="/get_metrics")
        assert [m["step"] for m in metrics] == list(range(1, 31))
        assert job["cluster_job"]["id"] == slurm_id
    finally:
        close_cluster_console(process)


def test_two_jobs_wanting_both_gpus_run_one_after_the_other(cluster_console):
    """The first trains until the test has seen the second wait in Slurm for its GPUs (a job
    of fixed length could end before the console looks), then makes room by a cancel."""
    client, _ = cluster_console
    first = client.predict({**EXACT, "gpus": 2, "max_steps": 100000, "name": "first"},
                           api_name="/submit_job")["job_id"]
    second = client.predict({**EXACT, "gpus": 2, "max_steps": 2, "name": "second"},
                            api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(client, first)["progress"]["step"] >= 1, 180,
               "the first 2-GPU job to train")
    pending = wait_until(lambda: (j := job_of(client, second))["progress"].get("cluster", {})
                         .get("reason") == "Resources" and j, 60,
                         "the second job to wait in Slurm for resources")
    assert pending["progress"]["cluster"]["state"] == "PENDING"
    client.predict(first, api_name="/cancel_job")
    assert settled(client, first, 60)["status"] == "cancelled"
    assert settled(client, second, 300)["status"] == "completed"
    # It ran as two gloo ranks (srun, then torchrun) in one allocation; one metrics stream.
    log = (client.workspace / "jobs" / second / "training.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    steps = [m["step"] for m in client.predict(second, 0, api_name="/get_metrics")]
    assert steps == [1, 2]


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


def slow_sbatch(folder, seconds: int):
    """A folder to put first on PATH: its sbatch notes when it was called, waits `seconds` (as a
    busy slurmctld makes it), then runs the real one."""
    folder.mkdir()
    called = folder / "called"
    wrapper = folder / "sbatch"
    wrapper.write_text(f"#!/bin/sh\ndate +%s.%N >> {called}\nsleep {seconds}\n"
                       f"exec {shutil.which('sbatch')} \"$@\"\n")
    wrapper.chmod(0o755)
    return called


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_slow_sbatch_holds_up_no_other_call(slurm_cluster, tmp_path):
    """The store lock is not held while the scheduler runs sbatch: with an sbatch taking 10 s,
    listing and submitting answer at once, and both jobs then run."""
    called = slow_sbatch(tmp_path / "slow-bin", 10)
    process, client = open_cluster_console(
        slurm_cluster, tmp_path / "workspace",
        env={"PATH": f"{tmp_path / 'slow-bin'}{os.pathsep}{os.environ['PATH']}"})
    try:
        first = client.predict({"max_steps": 3, "save_steps": 100, "name": "first"},
                               api_name="/submit_job")["job_id"]
        wait_until(called.exists, 30, "the console to call the slow sbatch")
        listed, list_s = timed(lambda: client.predict(None, api_name="/list_jobs"))
        second, submit_s = timed(lambda: client.predict(
            {"max_steps": 3, "save_steps": 100, "name": "second"}, api_name="/submit_job"))
        shown, get_s = timed(lambda: job_of(client, first))
        assert time.time() < float(called.read_text().split()[0]) + 10, \
            "the calls were not made while sbatch was still waiting"
        assert {"list": list_s, "submit": submit_s, "get": get_s} == pytest.approx(
            {"list": 0, "submit": 0, "get": 0}, abs=0.9)
        assert [j["job_id"] for j in listed] == [first] and second["status"] == "queued"
        assert shown["status"] == "queued" and shown["waiting"] == "starting"
        for job_id in (first, second["job_id"]):
            job = settled(client, job_id, 240)
            assert job["status"] == "completed", job["error"]
            assert job["cluster_job"]["id"]
        assert len(called.read_text().split()) == 2  # one sbatch each, none repeated
    finally:
        close_cluster_console(process)
