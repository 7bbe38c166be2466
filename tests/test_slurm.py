"""The console as a front end for a Slurm cluster: a real single-node Slurm (slurmctld, slurmd
and munged started by a session fixture, two GPUs faked as gres devices) and `app.py --cluster
slurm` driven through gradio_client. Jobs become sbatch submissions running the same
`python -m engine.train`; the console follows them through the job folder and Slurm's tools.
Recovery (pause, requeue, restarts, time limits) is in test_slurm_recovery.py."""

import os
import shutil
import threading

import pytest
from harness import wait_until
from slurm_jobs import EXACT, close_cluster_console, job_of, open_cluster_console, settled, squeue

from engine.jobfiles import JobPaths

pytestmark = pytest.mark.slow


def test_jobs_wanting_both_gpus_wait_in_slurm_and_cancel_there(cluster_console):
    """A one-GPU job trains until the test has seen two jobs that each want both GPUs wait in
    Slurm for resources (a job of fixed length could end before the console looks). A pending
    job is cancelled in Slurm's queue, the running one where it runs, and the third then gets
    the GPUs and runs as two ranks: one allocation after the other, nothing left behind."""
    client, cluster = cluster_console
    running = client.predict({**EXACT, "gpus": 1, "max_steps": 100000, "name": "long"},
                             api_name="/submit_job")["job_id"]
    waiting = client.predict({**EXACT, "gpus": 2, "name": "waits"},
                             api_name="/submit_job")["job_id"]
    after = client.predict({**EXACT, "gpus": 2, "max_steps": 2, "name": "after"},
                           api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(client, running)["progress"]["step"] >= 1, 180,
               "the long one-GPU job to train")
    pending = wait_until(lambda: (j := job_of(client, waiting))["progress"].get("cluster", {})
                         .get("reason") == "Resources" and j, 60,
                         "the second job to wait in Slurm for resources")
    assert pending["progress"]["cluster"]["state"] == "PENDING"
    # Behind it in Slurm's queue: its reason is Resources or Priority (the job ahead of it).
    wait_until(lambda: job_of(client, after)["progress"].get("cluster", {}).get("state")
               == "PENDING", 60, "the third job to be pending in Slurm")
    client.predict(waiting, api_name="/cancel_job")
    assert settled(client, waiting, 60)["status"] == "cancelled"
    assert job_of(client, running)["status"] == "running"  # only the pending one was taken out
    client.predict(running, api_name="/cancel_job")
    assert settled(client, running, 60)["status"] == "cancelled"
    assert settled(client, after, 300)["status"] == "completed"
    # It ran as two gloo ranks (srun, then torchrun) in one allocation; one metrics stream.
    log = (client.workspace / "jobs" / after / "training.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" in log
    steps = [m["step"] for m in client.predict(after, 0, api_name="/get_metrics")]
    assert steps == [1, 2]
    assert squeue(cluster).strip() == ""  # nothing left in Slurm


def gated_sbatch(folder):
    """A folder to put first on PATH: its sbatch notes each call in `called`, waits until the
    test creates `gate` (as a busy slurmctld holds sbatch up), then runs the real one."""
    folder.mkdir()
    called, gate = folder / "called", folder / "gate"
    wrapper = folder / "sbatch"
    wrapper.write_text(f"#!/bin/sh\ndate +%s.%N >> {called}\n"
                       f"while [ ! -e {gate} ]; do sleep 0.1; done\n"
                       f"exec {shutil.which('sbatch')} \"$@\"\n")
    wrapper.chmod(0o755)
    return called, gate


# Past this the test opens the gate itself, so that a call that waits for sbatch ends (and the
# test fails saying so) well before the console's own 30 s timeout for Slurm's commands.
GATE_OPENS_ITSELF_S = 15.0


def test_a_slow_sbatch_holds_up_no_call_and_each_job_then_streams_its_metrics_from_slurm(
        slurm_cluster, tmp_path):
    """The store lock is not held while the scheduler runs sbatch: with an sbatch held until
    the test lets it go, listing, submitting and reading a job all answer (a call that waited
    for sbatch would answer only once the gate opened). Then the default job runs as a Slurm
    job, looked at while it runs (its trainer holds after step 2 until the test lets it go on),
    and so does the job submitted meanwhile: one sbatch each."""
    called, gate = gated_sbatch(tmp_path / "slow-bin")
    process, client = open_cluster_console(
        slurm_cluster, tmp_path / "workspace",
        env={"PATH": f"{tmp_path / 'slow-bin'}{os.pathsep}{os.environ['PATH']}",
             "TRAINDECK_FAULTS": "hold-at-step:2"})
    opener = threading.Timer(GATE_OPENS_ITSELF_S, gate.touch)
    try:
        first = client.predict({"max_steps": 8, "save_steps": 100, "name": "first"},
                               api_name="/submit_job")["job_id"]
        wait_until(called.exists, 30, "the console to call the held sbatch")
        opener.start()
        listed = client.predict(None, api_name="/list_jobs")
        second = client.predict({"max_steps": 3, "save_steps": 100, "name": "second"},
                                api_name="/submit_job")
        shown = job_of(client, first)
        assert not gate.exists(), "the calls answered only once sbatch was let go"
        gate.touch()
        assert [j["job_id"] for j in listed] == [first] and second["status"] == "queued"
        assert shown["status"] == "queued" and shown["waiting"] == "starting"
        JobPaths(client.workspace / "jobs" / second["job_id"]).hold_release.touch()  # runs on

        running = wait_until(lambda: (j := job_of(client, first))["progress"]["step"] >= 2
                             and j, 120, "the Slurm job's second step to reach the console")
        slurm_id = running["cluster_job"]["id"]
        assert running["status"] == "running"
        assert running["progress"]["cluster"]["state"] == "RUNNING"
        assert f"traindeck-{first}" in squeue(slurm_cluster, "-j", slurm_id, "-o", "%j")
        live = client.predict(first, 0, api_name="/get_metrics")
        assert [m["step"] for m in live] == [1, 2]  # streamed while the job runs
        JobPaths(client.workspace / "jobs" / first).hold_release.touch()
        job = settled(client, first, 240)
        assert job["status"] == "completed", job["error"]
        assert [m["step"] for m in client.predict(first, 0, api_name="/get_metrics")] == \
            list(range(1, 9))
        assert job["cluster_job"]["id"] == slurm_id
        job = settled(client, second["job_id"], 240)
        assert job["status"] == "completed", job["error"]
        assert job["cluster_job"]["id"] not in ("", None, slurm_id)
        assert len(called.read_text().split()) == 2  # one sbatch each, none repeated
    finally:
        opener.cancel()
        gate.touch()
        close_cluster_console(process)
