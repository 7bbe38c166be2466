"""A shared console: logins and owners through gradio_client, priorities, preemption, several
GPUs (faked on the CPU) and a multi-process DDP job on gloo. Real consoles, real trainers."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import losses, processes_of, shutdown, wait_for_status, wait_for_step
from gradio_client.exceptions import AuthenticationError
from harness import REPO, call, console_client, refused, start_console, stop_console, wait_until

from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER, add_user

pytestmark = pytest.mark.slow  # real trainers and consoles

LONG = {"max_steps": 100000, "save_steps": 5, "learning_rate": 1e-3}


@pytest.fixture(scope="module")
def team_console(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team")
    users = folder / "users.yaml"
    add_user(users, "alice", "alice-secret", "admin")
    add_user(users, "bob", "bob-secret", "user", {"max_queued_jobs": 6, "max_steps": 1000})
    add_user(users, "carol", "carol-secret", "user")
    process, url = start_console(folder / "workspace", "--auth-file", str(users))
    clients = {name: console_client(url, auth=(name, f"{name}-secret"))
               for name in ("alice", "bob", "carol")}
    yield clients, url, folder / "workspace"
    stop_console(process)


def test_share_needs_logins():
    run = subprocess.run([sys.executable, "app.py", "--share"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "--share publishes the console" in run.stderr


def test_unauthenticated_calls_are_refused(team_console):
    _, url, _ = team_console
    with pytest.raises((AuthenticationError, ValueError)):
        console_client(url)  # cannot even read the API description
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
    wait_until(lambda: call(bob, "/get_job", bobs)["progress"].get("step", 0) >= 6, 60,
               "bob's job to pass its first checkpoint (step 5)")

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
    wait_until(lambda: call(alice, "/get_job", bobs)["status"] == "paused", 60,
               "bob's job to be paused by alice")


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
    wait_until(lambda: call(alice, "/get_job", blocker)["status"] == "cancelled", 60,
               "the blocker to be cancelled")


def test_jobs_start_in_the_order_the_queue_shows_and_preemption_makes_room(team_console):
    """A low-priority job holds the CPU; three queued jobs are reordered (the middle one moved to
    the front); an admin's urgent job preempts the low one (paused exactly, re-queued by itself);
    all start in the shown order."""
    clients, _, workspace = team_console
    alice = clients["alice"]
    # Long enough that only the preemption can end its first attempt, however fast the machine.
    low = call(alice, "/submit_job", {"max_steps": 100000, "save_steps": 5, "priority": -1,
                                      "name": "low"})["job_id"]
    wait_until(lambda: call(alice, "/get_job", low)["progress"].get("step", 0) >= 1, 60,
               "the low-priority job to take its first step")
    queued = [call(alice, "/submit_job", {"max_steps": 1, "save_steps": 100, "name": f"q{n}"})
              for n in range(3)]
    assert [q["position"] for q in queued] == [1, 2, 3]  # each as submitted
    queued = [q["job_id"] for q in queued]
    doomed = call(alice, "/submit_job", {"max_steps": 1, "priority": 9, "name": "doomed"})
    assert doomed["position"] == 1  # jumped the queue by priority...
    assert call(alice, "/cancel_job", doomed["job_id"])["status"] == "cancelled"  # ...and left it
    assert call(alice, "/set_priority", queued[1], 5)["position"] == 1
    shown = sorted((j for j in call(alice, "/list_jobs", "queued") if j["job_id"] in queued),
                   key=lambda j: j["position"])
    shown_order = [j["job_id"] for j in shown]
    assert shown_order == [queued[1], queued[0], queued[2]]

    urgent = call(alice, "/submit_job", {"max_steps": 1, "priority": 10, "preempt": True,
                                         "name": "urgent"})["job_id"]
    ahead = [urgent, *queued]

    def low_resumed() -> bool:
        low_job = call(alice, "/get_job", low)
        return (len(low_job["attempts"]) == 2 and low_job["status"] == "running"
                and all(call(alice, "/get_job", j)["status"] == "completed" for j in ahead))
    wait_until(low_resumed, 240, "the urgent and queued jobs to complete and the low one to run "
               "again", interval=1)
    jobs = {j: call(alice, "/get_job", j) for j in [*ahead, low]}
    first_starts = {j: job["attempts"][0]["started_at"] for j, job in jobs.items()}
    assert sorted(queued, key=first_starts.get) == shown_order
    # The low job was paused to make room, and resumed by itself after the queue ahead of it.
    attempts = jobs[low]["attempts"]
    assert attempts[0]["status"] == "paused"
    assert attempts[0]["finished_at"] <= first_starts[urgent] < first_starts[queued[1]]
    assert attempts[1]["started_at"] >= first_starts[queued[2]]
    checkpoint = attempts[1]["resume_from"]
    assert checkpoint.startswith("checkpoint-")
    log = workspace / "jobs" / low / "training.log"
    wait_until(lambda: f"resuming from {checkpoint}" in log.read_text(), 60,
               f"the low job's log to say it resumes from {checkpoint}")
    call(alice, "/cancel_job", low)  # the console free for the next test
    wait_until(lambda: call(alice, "/get_job", low)["status"] == "cancelled", 60,
               "the low job to be cancelled")
    never = call(alice, "/get_job", doomed["job_id"])
    assert never["started_at"] is None and never["attempts"] == []


@pytest.mark.slow
def test_two_gpu_jobs_share_four_gpus_run_as_gloo_ranks_and_resume_exactly(tmp_path):
    """Four faked GPUs: two 2-GPU jobs run at once while a third waits; each runs as two torchrun
    ranks on gloo; one is paused by its owner (every rank stops at the same step) and resumed,
    and trains exactly like the other. (A waiting job taking a freed GPU only once its holder let
    go is the preemption test's; here the third is withdrawn while it waits, to spare a launch.)"""
    engine = Engine(tmp_path / "workspace", gpu_indices=[0, 1, 2, 3]).start()
    engine.scheduler.tick_s = 0.1
    config = {"gpus": 2, "max_steps": 8, "gradient_accumulation_steps": 2,
              "per_device_train_batch_size": 4, "lora_dropout": 0.1, "learning_rate": 5e-3,
              "warmup_steps": 0, "save_steps": 1000}
    try:
        straight = engine.jobs.submit(LOCAL_USER, {**config, "name": "ddp straight"})["job_id"]
        paused = engine.jobs.submit(LOCAL_USER, {**config, "name": "ddp paused"})["job_id"]
        third = engine.jobs.submit(LOCAL_USER, {**config, **LONG, "name": "third"})["job_id"]
        wait_for_step(engine, paused, step=2)
        engine.jobs.pause(LOCAL_USER, paused)
        states = [engine.views.get_job(LOCAL_USER, j) for j in (straight, paused, third)]
        assert [s["status"] for s in states] == ["running", "running", "queued"]
        assert states[2]["waiting"] == "waiting for 2 free GPUs"
        assert sorted(s["attempts"][-1]["devices"] for s in states[:2]) == [[0, 1], [2, 3]]
        engine.jobs.cancel(LOCAL_USER, third)
        assert engine.views.get_job(LOCAL_USER, third)["attempts"] == []  # it never started

        # The pause reaches every rank at the same step boundary: both ranks honour it at one
        # step (each says so in the log; a rank killed after the grace would not), and torchrun
        # and both ranks are gone.
        job = wait_for_status(engine, paused)
        assert job["status"] == "paused", job["error"]
        step = int(job["last_checkpoint"].split("-")[1])
        assert 2 <= step < config["max_steps"]
        honoured = re.findall(r"pause honoured at step (\d+)",
                              engine.workspace.job_paths(paused).log.read_text())
        assert honoured == [str(step)] * 2, honoured
        assert processes_of(engine.workspace.job_paths(paused).job_file) == []

        assert wait_for_status(engine, straight)["status"] == "completed"
        log = engine.workspace.job_paths(straight).log.read_text()
        assert "rank 0 of 2" in log and "rank 1 of 2" in log and "CPU (gloo)" in log
        straight_losses = losses(engine.views.get_metrics(LOCAL_USER, straight, 0))
        assert len(straight_losses) == config["max_steps"]  # rank 0's, a record a step

        engine.jobs.resume(LOCAL_USER, paused)
        assert wait_for_status(engine, paused)["status"] == "completed"
        resumed_log = engine.workspace.job_paths(paused).log.read_text()
        assert f"resuming from checkpoint-{step}" in resumed_log
        assert losses(engine.views.get_metrics(LOCAL_USER, paused, 0)) == straight_losses
    finally:
        shutdown(engine)
