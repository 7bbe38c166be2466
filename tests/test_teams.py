"""A shared console: logins and owners through gradio_client, priorities, preemption, several
GPUs (faked on the CPU) and a multi-process DDP job on gloo. Real consoles, real trainers."""

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from bench.console import REPO, start_console, stop_console
from engine.api import Engine
from engine.users import add_user

from conftest import losses, processes_of, shutdown, wait_for_status, wait_for_step

LONG = {"max_steps": 100000, "save_steps": 5, "learning_rate": 1e-3}


def call(client, api_name, *args):
    return client.predict(*args, api_name=api_name)


def refused(client, api_name, *args) -> str:
    with pytest.raises(Exception) as error:
        call(client, api_name, *args)
    return str(error.value)


@pytest.fixture(scope="module")
def team_console(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team")
    users = folder / "users.yaml"
    add_user(users, "alice", "alice-secret", "admin")
    add_user(users, "bob", "bob-secret", "user", {"max_queued_jobs": 6, "max_steps": 1000})
    add_user(users, "carol", "carol-secret", "user")
    process, url = start_console(folder / "workspace", "--auth-file", str(users))
    clients = {name: Client(url, auth=(name, f"{name}-secret"), verbose=False)
               for name in ("alice", "bob", "carol")}
    yield clients, url, folder / "workspace"
    stop_console(process)


def test_share_needs_logins():
    run = subprocess.run([sys.executable, "app.py", "--share"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "--share publishes the console" in run.stderr


def test_unauthenticated_calls_are_refused(team_console):
    _, url, _ = team_console
    with pytest.raises(Exception):
        Client(url, verbose=False)  # cannot even read the API description
    response = httpx.post(f"{url}gradio_api/call/list_jobs", json={"data": [None]}, timeout=10)
    assert response.status_code in (401, 403)
    assert httpx.get(f"{url}config", timeout=10).status_code in (401, 403)
    wrong = httpx.post(f"{url}login", data={"username": "bob", "password": "nope"}, timeout=10)
    assert wrong.status_code in (400, 401)


def test_users_see_every_job_but_act_only_on_their_own(team_console):
    clients, _, _ = team_console
    alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
    # bob's long job holds the CPU, so carol's stays queued behind it.
    bobs = call(bob, "/submit_job", {**LONG, "max_steps": 1000, "name": "bob's run"})["job_id"]
    carols = call(carol, "/submit_job", {"max_steps": 3, "name": "carol's run"})["job_id"]
    assert {bobs, carols} <= {j["job_id"] for j in call(carol, "/list_jobs", None)}
    assert call(carol, "/get_job", bobs)["owner"] == "bob"
    assert call(bob, "/get_job", carols)["owner"] == "carol"
    while call(bob, "/get_job", bobs)["progress"].get("step", 0) < 6:  # a checkpoint exists
        time.sleep(0.5)

    for api_name, args in (("/cancel_job", (bobs,)), ("/pause_job", (bobs,)),
                           ("/set_priority", (bobs, 9)), ("/download_logs", (bobs,)),
                           ("/download_model", (bobs, "checkpoint-5")),
                           ("/resume_job", (bobs, None, None, False))):
        message = refused(carol, api_name, *args)
        assert f"not your job: {bobs} belongs to bob" in message, (api_name, message)
    assert call(alice, "/get_job", bobs)["status"] == "running"  # nothing changed

    assert Path(call(bob, "/download_logs", bobs)).exists()  # the owner may
    call(alice, "/pause_job", bobs)  # and so may an admin
    assert "not your job" in refused(bob, "/cancel_job", carols)
    deadline = time.time() + 60
    while call(alice, "/get_job", bobs)["status"] != "paused" and time.time() < deadline:
        time.sleep(0.5)
    assert call(alice, "/get_job", bobs)["status"] == "paused"


def test_over_quota_submits_are_refused_with_the_quota_named(team_console):
    clients, _, _ = team_console
    alice, bob = clients["alice"], clients["bob"]
    message = refused(bob, "/submit_job", {"max_steps": 5000})
    assert "quota max_steps: bob may use at most 1000; the job asks for max_steps 5000" in message
    blocker = call(alice, "/submit_job", {**LONG, "name": "blocker"})["job_id"]
    jobs = [call(bob, "/submit_job", {"max_steps": 3})["job_id"] for _ in range(6)]
    before = len(call(bob, "/list_jobs", None))
    message = refused(bob, "/submit_job", {"max_steps": 3})
    assert "quota max_queued_jobs: bob has 6 jobs queued (quota 6)" in message
    assert len(call(bob, "/list_jobs", None)) == before  # the refusal created nothing
    for job_id in jobs + [blocker]:
        call(alice, "/cancel_job", job_id)
    while call(alice, "/get_job", blocker)["status"] != "cancelled":
        time.sleep(0.5)


def test_jobs_start_in_the_order_the_queue_shows(team_console):
    clients, _, _ = team_console
    alice = clients["alice"]
    workspace = team_console[2]
    blocker = call(alice, "/submit_job", {**LONG, "name": "blocker"})["job_id"]
    while call(alice, "/get_job", blocker)["progress"].get("step", 0) < 1:
        time.sleep(0.3)
    queued = [call(alice, "/submit_job", {"max_steps": 1, "save_steps": 100, "name": f"q{n}"})
              for n in range(5)]
    assert [q["position"] for q in queued] == [1, 2, 3, 4, 5]  # each as submitted
    queued = [q["job_id"] for q in queued]
    doomed = call(alice, "/submit_job", {"max_steps": 1, "priority": 9, "name": "doomed"})
    assert doomed["position"] == 1  # jumped the queue by priority...
    assert call(alice, "/cancel_job", doomed["job_id"])["status"] == "cancelled"  # ...and left it
    moved = call(alice, "/set_priority", queued[3], 5)
    assert moved["position"] == 1
    shown = sorted((j for j in call(alice, "/list_jobs", "queued") if j["job_id"] in queued),
                   key=lambda j: j["position"])
    shown_order = [j["job_id"] for j in shown]
    assert shown_order == [queued[3], queued[0], queued[1], queued[2], queued[4]]

    job_file = workspace / "jobs" / blocker / "job.yaml"
    assert processes_of(job_file)
    asked = time.time()
    assert call(alice, "/cancel_job", blocker)["requested"] == "cancel"
    while call(alice, "/get_job", blocker)["status"] != "cancelled":
        assert time.time() - asked < 5, "a cancelled trainer must stop within its step"
        time.sleep(0.2)
    assert processes_of(job_file) == []  # the trainer and anything it spawned are gone
    for job_id in queued:
        deadline = time.time() + 120
        while call(alice, "/get_job", job_id)["status"] not in ("completed", "failed") \
                and time.time() < deadline:
            time.sleep(0.5)
    started = sorted(queued, key=lambda j: call(alice, "/get_job", j)["started_at"])
    assert started == shown_order
    never = call(alice, "/get_job", doomed["job_id"])
    assert never["started_at"] is None and never["attempts"] == []


@pytest.mark.slow
def test_an_admin_job_with_preempt_pauses_the_lowest_priority_job_which_resumes_later(tmp_path):
    engine = Engine(tmp_path / "workspace").start()
    engine.scheduler.tick_s = 0.1
    try:
        low = engine.submit({"max_steps": 40, "save_steps": 5, "priority": -1, "name": "low"})["job_id"]
        wait_for_step(engine, low, step=6)
        urgent = engine.submit({"max_steps": 3, "priority": 10, "preempt": True,
                                "name": "urgent"})["job_id"]
        assert wait_for_status(engine, urgent)["status"] == "completed"
        done = wait_for_status(engine, low)
        assert done["status"] == "completed"
        attempts = done["attempts"]
        assert [a["status"] for a in attempts] == ["paused", "completed"]
        assert attempts[1]["resume_from"].startswith("checkpoint-")
        urgent_job = engine.get_job(urgent)
        assert attempts[0]["finished_at"] <= urgent_job["started_at"] <= attempts[1]["started_at"]
        log = engine.workspace.job_paths(low).log.read_text()
        assert f"resuming from {attempts[1]['resume_from']}" in log
    finally:
        shutdown(engine)


@pytest.mark.slow
def test_a_two_gpu_job_runs_as_two_gloo_ranks_and_resumes_exactly(tmp_path):
    engine = Engine(tmp_path / "workspace").start()
    engine.scheduler.tick_s = 0.1
    config = {"gpus": 2, "max_steps": 8, "gradient_accumulation_steps": 2,
              "per_device_train_batch_size": 4, "lora_dropout": 0.1, "learning_rate": 5e-3,
              "warmup_steps": 0, "save_steps": 1000}
    try:
        straight = engine.submit({**config, "name": "ddp straight"})["job_id"]
        job = wait_for_status(engine, straight)
        assert job["status"] == "completed", job["error"]
        log = engine.workspace.job_paths(straight).log.read_text()
        assert "rank 0 of 2" in log and "rank 1 of 2" in log and "CPU (gloo)" in log
        straight_losses = losses(engine.get_metrics(straight, 0))
        assert len(straight_losses) == 8  # one metrics stream: rank 0's, one record a step

        engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "pause-at-microstep:5"}
        paused = engine.submit({**config, "name": "ddp paused"})["job_id"]
        job = wait_for_status(engine, paused)
        engine.supervisor.extra_env = {}
        assert job["status"] == "paused", job["error"]
        assert job["last_checkpoint"] == "checkpoint-3"  # micro-batch 5 is inside step 3
        job_file = engine.workspace.job_paths(paused).job_file
        assert processes_of(job_file) == []  # torchrun and both ranks are gone
        engine.resume(paused)
        assert wait_for_status(engine, paused)["status"] == "completed"
        assert losses(engine.get_metrics(paused, 0)) == straight_losses
    finally:
        shutdown(engine)


@pytest.mark.slow
def test_four_faked_gpus_run_two_two_gpu_jobs_at_once_and_a_third_waits(tmp_path):
    engine = Engine(tmp_path / "workspace", gpu_indices=[0, 1, 2, 3]).start()
    engine.scheduler.tick_s = 0.1
    try:
        jobs = [engine.submit({**LONG, "gpus": 2, "name": f"wide {n}"})["job_id"] for n in range(3)]
        for job_id in jobs[:2]:
            wait_for_status(engine, job_id, statuses={"running"}, timeout=30)
        time.sleep(1)
        states = [engine.get_job(j) for j in jobs]
        assert [s["status"] for s in states] == ["running", "running", "queued"]
        assert states[2]["waiting"] == "waiting for 2 free GPUs"
        devices = [s["attempts"][-1]["devices"] for s in states[:2]]
        assert sorted(devices) == [[0, 1], [2, 3]]
        engine.cancel(jobs[0])
        wait_for_status(engine, jobs[2], statuses={"running"}, timeout=60)
        assert engine.get_job(jobs[2])["attempts"][-1]["devices"] == devices[0]
        for job_id in jobs[1:]:
            engine.cancel(job_id)
        for job_id in jobs:
            assert wait_for_status(engine, job_id, timeout=60)["status"] == "cancelled"
            assert processes_of(engine.workspace.job_paths(job_id).job_file) == []
    finally:
        shutdown(engine)
