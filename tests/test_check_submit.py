"""A check says what a submit would say, through gradio_client against one real console with
logins: every preset (read from /list_presets, so a new one is covered without editing this file)
checks and trains the tiny model to completed, or both calls refuse it naming what this machine
lacks; and a plain user's check runs the rules of their submit (webhook addresses, quotas).
The unit tier checks the same agreement on an engine that schedules nothing."""

import re

import pytest
from gradio_client.exceptions import AppError
from harness import call, console_client, refused, start_console, stop_console, wait_until

from engine.config import ConfigError
from engine.console.people.users import add_user
from engine.machine import Machine

SHORT = {"max_steps": 2}  # a preset's own settings, cut to two optimizer steps
FINISHED = {"completed", "failed", "cancelled", "paused"}
# A refusal for this machine says what it lacks ("needs a CUDA GPU, and this machine has none").
NAMES_WHAT_IS_MISSING = re.compile(r"this machine|needs (a|an|the) ", re.IGNORECASE)


# ---- the unit tier: an engine with logins that starts nothing ---------------------------------

REFUSED_FOR_BOB = {
    "webhook": ({"notify_url": "http://169.254.169.254/latest"}, "private network"),
    "steps": ({"max_steps": 5000}, "quota max_steps: bob may use at most 50"),
    "gpus": ({"gpus": 3}, "quota max_gpus: bob may use at most 2"),
    "preempt": ({"preempt": True}, "preempt: only admins may pause other jobs"),
}


@pytest.mark.parametrize("rule", list(REFUSED_FOR_BOB))
def test_check_refuses_what_submit_refuses(idle_engine, rule):
    config, expected = REFUSED_FOR_BOB[rule]
    bob = idle_engine.users.get("bob")
    with pytest.raises(ConfigError, match=expected) as at_check:
        idle_engine.jobs.check(bob, {"max_steps": 5, **config})
    with pytest.raises(ConfigError) as at_submit:
        idle_engine.jobs.submit(bob, {"max_steps": 5, **config})
    assert str(at_submit.value) == str(at_check.value)
    assert idle_engine.store.all() == []


def test_check_counts_the_jobs_already_queued(idle_engine):
    bob = idle_engine.users.get("bob")  # max_queued_jobs 2
    for _ in range(2):
        idle_engine.jobs.submit(bob, {"max_steps": 5})
    with pytest.raises(ConfigError, match="quota max_queued_jobs: bob has 2 jobs queued"):
        idle_engine.jobs.check(bob, {"max_steps": 5})
    assert idle_engine.jobs.check(idle_engine.users.get("carol"), {"max_steps": 5}).config


def test_a_qlora_check_on_a_machine_without_a_gpu_notes_it_runs_slowly(idle_engine):
    idle_engine.machine = Machine(cpu_count=2)  # what advice reads: this machine, GPU-less
    alice = idle_engine.users.get("alice")
    resolution = idle_engine.jobs.check(alice, {"preset": "efficient-qlora", "max_steps": 2})
    notes = idle_engine.advice(alice, resolution)
    assert any("QLoRA is meant for a GPU" in note for note in notes), notes


# ---- a real console through gradio_client -----------------------------------------------------


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    folder = tmp_path_factory.mktemp("check-submit")
    users = folder / "users.yaml"
    add_user(users, "alice", "alice-secret", "admin")
    add_user(users, "bob", "bob-secret", "user", {"max_steps": 50})
    add_user(users, "dave", "dave-secret", "user", {"max_jobs": 1})
    process, url = start_console(folder / "workspace", "--auth-file", str(users))
    try:
        yield {name: console_client(url, auth=(name, f"{name}-secret"))
               for name in ("alice", "bob", "dave")}
    finally:
        stop_console(process)


def wait_finished(client, job_ids: dict[str, str], timeout: float) -> dict[str, dict]:
    """Each job's dict once every one has finished, keyed as `job_ids`."""
    def jobs():
        return {key: call(client, "/get_job", job_id) for key, job_id in job_ids.items()}

    def all_finished():
        now = jobs()
        return all(job["status"] in FINISHED for job in now.values()) and now

    return wait_until(all_finished, timeout, lambda: "the presets' jobs to finish: " + ", ".join(
        f"{key} {job['status']}" for key, job in jobs().items()), interval=0.5)


@pytest.mark.slow
def test_every_preset_checks_and_trains_or_both_calls_name_what_this_machine_lacks(clients):
    alice = clients["alice"]
    presets = [preset["name"] for preset in call(alice, "/list_presets")]
    assert "efficient-qlora" in presets and "basic-fine-tune" in presets
    job_ids, refusals = {}, {}
    for name in presets:
        config = {"preset": name, **SHORT, "name": f"preset {name}"}
        try:
            checked = call(alice, "/check_job", config)
        except AppError as error:
            message = str(error)
            assert "internal error" not in message, (name, message)
            assert NAMES_WHAT_IS_MISSING.search(message), (name, message)
            assert refused(alice, "/submit_job", config) == message  # submit says the same
            refusals[name] = message
            continue
        assert checked["valid"] and checked["config"]["preset"] == name, checked
        assert checked["dataset"]["rows"] > 0 and checked["notes"], checked
        job_ids[name] = call(alice, "/submit_job", config)["job_id"]
    # A CPU trains every shipped preset, QLoRA's 4-bit load included (bitsandbytes' CPU backend).
    assert "efficient-qlora" in job_ids, refusals
    for name, job in wait_finished(alice, job_ids, timeout=60 * len(job_ids)).items():
        assert job["status"] == "completed", (name, job["error"])
        assert job["progress"]["step"] == SHORT["max_steps"], (name, job["progress"])


@pytest.mark.slow
def test_qlora_check_notes_that_a_cpu_runs_it_slowly(clients):
    notes = call(clients["alice"], "/check_job", {"preset": "efficient-qlora"})["notes"]
    assert any("QLoRA is meant for a GPU" in note for note in notes), notes


@pytest.mark.slow
@pytest.mark.parametrize("inside", ["http://127.0.0.1:22/x", "http://169.254.169.254/latest",
                                    "http://localhost:7860/hook", "http://10.0.0.5/hook"])
def test_a_plain_users_check_refuses_the_webhook_their_submit_refuses(clients, inside):
    bob, alice = clients["bob"], clients["alice"]
    config = {**SHORT, "notify_url": inside}
    jobs_before = len(call(alice, "/list_jobs", None))
    at_check = refused(bob, "/check_job", config)
    assert f"notify_url {inside!r}: the address is on this machine or a private network" in at_check
    assert refused(bob, "/submit_job", config) == at_check
    assert len(call(alice, "/list_jobs", None)) == jobs_before  # nothing was queued
    assert call(alice, "/check_job", config)["valid"]  # an admin may notify the inside


@pytest.mark.slow
def test_a_plain_users_check_refuses_what_their_quotas_refuse(clients):
    bob, dave = clients["bob"], clients["dave"]
    over = {"max_steps": 500}
    at_check = refused(bob, "/check_job", over)
    assert "quota max_steps: bob may use at most 50; the job asks for max_steps 500" in at_check
    assert refused(bob, "/submit_job", over) == at_check

    assert call(dave, "/check_job", SHORT)["valid"]
    held = call(dave, "/submit_job", {**SHORT, "name": "dave's one job"})["job_id"]
    at_check = refused(dave, "/check_job", SHORT)
    assert "quota max_jobs: dave holds 1 jobs (quota 1)" in at_check
    assert refused(dave, "/submit_job", SHORT) == at_check
    assert [job["job_id"] for job in call(dave, "/list_jobs", None)
            if job["owner"] == "dave"] == [held]

