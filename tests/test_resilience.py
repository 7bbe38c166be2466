"""Pause/resume with exact continuation, and jobs that survive crashes, hangs and restarts.
Every test runs real trainers; faults are injected with TRAINDECK_FAULTS or real signals."""

import os
import signal
import time

import pytest
import torch
from conftest import losses, processes_of, wait_for_status, wait_for_step
from exact_runs import EVALUATED, EXACT, final_tensors, straight_run
from harness import console_client, stop_console, wait_until
from harness import start_console as launch_console

from engine.config import ConfigError
from engine.console.people.users import LOCAL_USER
from engine.jobfiles import INCOMPLETE_MARKER, JobPaths

pytestmark = pytest.mark.slow  # real trainers and consoles

# One per mechanism: LoRA SFT with its dropout's RNG and evaluations on both sides of the pause
# (a plain LoRA SFT run takes the same path with no evaluation), full weights in the checkpoint,
# and each preference trainer with its own collator (KTO's batches also hold answers to other
# prompts, for its KL term; the reward model trains a score head beside its adapter).
KINDS = {"sft-lora-evaluated": EVALUATED,
         "sft-full": {**EXACT, "adapter": "full", "learning_rate": 1e-3},
         "dpo-lora": {**EXACT, "preset": "dpo-preference"},
         "kto-lora": {**EXACT, "preset": "kto-feedback"},
         "reward-lora": {**EXACT, "preset": "reward-model"}}
LONG = {"max_steps": 100000, "save_steps": 5, "learning_rate": 1e-3}


def straight_and_paused(engine, config, resume_faults=""):
    straight = straight_run(engine, config)
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "pause-at-microstep:10"}
    paused = engine.jobs.submit(LOCAL_USER, {**config, "name": "paused"})["job_id"]
    job = wait_for_status(engine, paused)
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": resume_faults} if resume_faults else {}
    assert job["status"] == "paused" and job["paused_at"], job["error"]
    assert job["progress"]["step"] == 3 and job["last_checkpoint"] == "checkpoint-3"
    log = engine.workspace.job_paths(paused).log.read_text()
    assert "pause requested during step 3, after micro-batch 2 of 4" in log
    engine.jobs.resume(LOCAL_USER, paused)
    assert wait_for_status(engine, paused)["status"] == "completed"
    engine.supervisor.extra_env = {}
    log = engine.workspace.job_paths(paused).log.read_text()
    assert "resuming from checkpoint-3" in log
    assert "tokenized train dataset: reusing cache" in log  # tokenized once, by content
    return straight, paused


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_pause_mid_cycle_then_resume_equals_a_straight_run(exact_engine, kind):
    engine = exact_engine
    straight, paused = straight_and_paused(engine, KINDS[kind])
    straight_metrics = engine.views.get_metrics(LOCAL_USER, straight, 0)
    straight_losses = losses(straight_metrics)
    assert len(straight_losses) == 10
    # bitwise, step for step
    assert losses(engine.views.get_metrics(LOCAL_USER, paused, 0)) == straight_losses
    evaluations = [(m["step"], m["eval_loss"]) for m in straight_metrics if "eval_loss" in m]
    assert evaluations == [(m["step"], m["eval_loss"])
                           for m in engine.views.get_metrics(LOCAL_USER, paused, 0)
                           if "eval_loss" in m]
    assert len(evaluations) == (5 if "eval_split" in KINDS[kind] else 0)  # at 2, 4, ... 10
    a, b = final_tensors(engine, straight), final_tensors(engine, paused)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert engine.views.get_job(LOCAL_USER, paused)["attempt"] == 2


@pytest.mark.slow
def test_negative_control_resume_without_rng_and_data_position_diverges(exact_engine):
    engine = exact_engine
    straight, paused = straight_and_paused(engine, EVALUATED,
                                           resume_faults="resume-without-state")
    a, b = (losses(engine.views.get_metrics(LOCAL_USER, job, 0)) for job in (straight, paused))
    assert a[:3] == b[:3]  # identical until the pause...
    assert a[3:] != b[3:]  # ...and the comparison sees the divergence after it
    ta, tb = final_tensors(engine, straight), final_tensors(engine, paused)
    assert not all(torch.equal(ta[k], tb[k]) for k in ta)


def held_at_step_6(engine, config):
    """A job submitted with `config`, held once its step 6 is done (checkpoint-5 complete and no
    later one begun), where a test kills it without racing it; and the job as it is then."""
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "hold-at-step:6"}
    job_id = engine.jobs.submit(LOCAL_USER, config)["job_id"]
    running = wait_for_step(engine, job_id, step=6)
    engine.supervisor.extra_env = {}  # later attempts and jobs run unheld
    wait_until(lambda: "held at step 6" in engine.workspace.job_paths(job_id).log.read_text(),
               30, "the trainer to be held at step 6")
    return job_id, running


def test_kill_9_fails_the_job_fast_and_the_queue_moves_on(engine):
    victim, running = held_at_step_6(engine, {**LONG, "name": "victim"})
    waiting = engine.jobs.submit(LOCAL_USER, {"max_steps": 3, "name": "next"})["job_id"]
    job_file = engine.workspace.job_paths(victim).job_file
    os.kill(running["pid"], signal.SIGKILL)
    killed = time.time()
    failed = wait_for_status(engine, victim, timeout=10)
    assert time.time() - killed < 5
    assert failed["status"] == "failed"
    assert "killed by SIGKILL" in failed["error"]
    assert processes_of(job_file) == []
    wait_for_status(engine, waiting, statuses={"running", "completed"}, timeout=10)
    assert wait_for_status(engine, waiting)["status"] == "completed"

    # The failed job resumes from its last complete checkpoint.
    assert failed["last_checkpoint"] == "checkpoint-5"
    engine.jobs.resume(LOCAL_USER, victim, changes={"max_steps": 8})
    done = wait_for_status(engine, victim)
    assert done["status"] == "completed" and done["attempt"] == 2
    assert "resuming from checkpoint-5" in engine.workspace.job_paths(victim).log.read_text()
    assert done["progress"]["step"] == 8


def test_a_hung_trainer_is_killed_after_its_timeout(engine):
    job_id = engine.jobs.submit(LOCAL_USER, {**LONG, "timeout_minutes": 0.1,
                                             "name": "hang"})["job_id"]
    running = wait_for_step(engine, job_id, step=2)
    job_file = engine.workspace.job_paths(job_id).job_file
    os.kill(running["pid"], signal.SIGSTOP)
    stopped = time.time()
    failed = wait_for_status(engine, job_id, timeout=30)
    assert time.time() - stopped < 20
    assert failed["status"] == "failed"
    assert failed["error"].startswith("timed out after 0.1 min without progress")
    assert processes_of(job_file) == []
    assert engine.jobs.resume(LOCAL_USER, job_id)["status"] == "queued"  # resumable
    engine.jobs.cancel(LOCAL_USER, job_id)


def test_a_checkpoint_killed_mid_save_is_skipped_on_resume(engine):
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "kill-in-save:4"}
    job_id = engine.jobs.submit(LOCAL_USER, {"max_steps": 6, "save_steps": 2,
                                             "save_total_limit": 0, "name": "torn"})["job_id"]
    failed = wait_for_status(engine, job_id)
    engine.supervisor.extra_env = {}
    paths = engine.workspace.job_paths(job_id)
    assert failed["status"] == "failed"
    assert (paths.root / "checkpoint-4" / INCOMPLETE_MARKER).exists()  # a torn checkpoint
    checkpoints = engine.views.list_checkpoints(LOCAL_USER, job_id)
    assert [c["name"] for c in checkpoints] == ["checkpoint-2"]
    assert failed["last_checkpoint"] == "checkpoint-2"
    with pytest.raises(ConfigError, match="no complete checkpoint checkpoint-4"):
        engine.jobs.resume(LOCAL_USER, job_id, "checkpoint-4")
    engine.jobs.resume(LOCAL_USER, job_id)
    done = wait_for_status(engine, job_id)
    assert done["status"] == "completed"
    assert "resuming from checkpoint-2" in paths.log.read_text()
    assert not (paths.root / "checkpoint-4" / INCOMPLETE_MARKER).exists()  # rewritten whole
    assert [c["name"] for c in engine.views.list_checkpoints(LOCAL_USER, job_id)] == \
        ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_a_crashed_job_is_retried_from_its_checkpoint(engine):
    job_id, running = held_at_step_6(engine, {**LONG, "max_steps": 8, "max_retries": 1,
                                              "name": "retry"})
    os.kill(running["pid"], signal.SIGKILL)
    done = wait_for_status(engine, job_id, statuses={"completed"}, timeout=120)
    assert done["attempt"] == 2
    assert [a["status"] for a in done["attempts"]] == ["failed", "completed"]
    assert done["attempts"][1]["resume_from"] == "checkpoint-5"  # the last complete one
    assert "resuming from checkpoint-5" in engine.workspace.job_paths(job_id).log.read_text()
    # steps 6 to 8 again, after the first attempt's step 6 was dropped with it
    assert [m["step"] for m in engine.views.get_metrics(LOCAL_USER, job_id, 0)
            if "loss" in m] == list(range(1, 9))


def test_resume_refuses_changes_that_break_exactness(engine):
    job_id = engine.jobs.submit(LOCAL_USER, {**LONG, "name": "strict"})["job_id"]
    wait_for_step(engine, job_id, step=1)
    engine.jobs.pause(LOCAL_USER, job_id)
    paused = wait_for_status(engine, job_id)
    assert paused["status"] == "paused"
    at = paused["progress"]["step"]  # wherever the pause landed: the machine decides
    assert paused["last_checkpoint"] == f"checkpoint-{at}"
    with pytest.raises(ConfigError, match="changing per_device_train_batch_size, seed on resume "
                                          "breaks exact continuation"):
        engine.jobs.resume(LOCAL_USER, job_id,
                           changes={"per_device_train_batch_size": 2, "seed": 7})
    with pytest.raises(ConfigError, match="cannot change adapter on resume"):
        engine.jobs.resume(LOCAL_USER, job_id, changes={"adapter": "full"})
    # refused: nothing changed
    assert engine.views.get_job(LOCAL_USER, job_id)["status"] == "paused"
    queued = engine.jobs.resume(LOCAL_USER, job_id,
                                changes={"gradient_accumulation_steps": 2, "max_steps": at + 3},
                                allow_inexact=True)
    assert queued["status"] == "queued"
    job = wait_for_status(engine, job_id)
    assert job["status"] == "completed", job["error"]
    # Went on from its checkpoint (not from scratch) under the changed config, to the new end.
    assert job["progress"]["step"] == at + 3
    log = engine.workspace.job_paths(job_id).log.read_text()
    assert f"resuming from checkpoint-{at}" in log
    assert [m["step"] for m in engine.views.get_metrics(LOCAL_USER, job_id, at)
            if "loss" in m] == [at + 1, at + 2, at + 3]
    assert job["config"]["gradient_accumulation_steps"] == 2  # the run's config, as changed


@pytest.mark.slow
def test_console_killed_and_restarted_reattaches_its_trainers(tmp_path):
    def job_of(job_id):
        return client.predict(job_id, api_name="/get_job")

    def ended(job_id, states=("running",)):
        return (job := job_of(job_id))["status"] not in states and job

    workspace = tmp_path / "workspace"
    # The survivor waits after step 2 (not training on through the restart, which would only
    # slow the new console down) until the test lets it go on.
    console, url = launch_console(workspace, env={"TRAINDECK_FAULTS": "hold-at-step:2"})
    client = console_client(url)
    survivor = client.predict({"max_steps": 100000, "save_steps": 100000, "name": "survivor"},
                              api_name="/submit_job")["job_id"]
    # Queued behind the survivor; later the trainer lost while no console watches.
    lost = client.predict({"max_steps": 100000, "save_steps": 2, "name": "lost"},
                          api_name="/submit_job")["job_id"]
    wait_until(lambda: job_of(survivor)["progress"]["step"] >= 2, 60,
               "the survivor to reach step 2")
    trainer_pid = job_of(survivor)["pid"]
    console.send_signal(signal.SIGKILL)
    console.wait()
    os.kill(trainer_pid, 0)  # the trainer outlived its console

    console, url = launch_console(workspace)  # whose trainers are held nowhere
    try:
        client = console_client(url)
        job = job_of(survivor)
        assert job["status"] == "running" and job["pid"] == trainer_pid  # re-attached
        step = job["progress"]["step"]
        JobPaths(workspace / "jobs" / survivor).hold_release.touch()
        wait_until(lambda: job_of(survivor)["progress"]["step"] >= step + 3, 60,
                   "the re-attached survivor's metrics to keep coming")
        # The re-attached trainer is under control and its ending is read from its exit record.
        client.predict(survivor, api_name="/pause_job")
        job = wait_until(lambda: ended(survivor), 60, "the re-attached survivor to pause")
        assert job["status"] == "paused", job["error"]
        metrics = client.predict(survivor, step, api_name="/get_metrics")
        assert [m["step"] for m in metrics] == list(range(step + 1, metrics[-1]["step"] + 1))
        assert metrics[-1]["step"] == int(job["last_checkpoint"].split("-")[1])

        # The job queued behind it starts; its trainer dies while no console watches: failed
        # on restart, then resumable.
        wait_until(lambda: job_of(lost)["progress"]["step"] >= 3, 60,
                   "the job queued behind the survivor to start and reach step 3 "
                   "(past its first checkpoint)")
        lost_pid = job_of(lost)["pid"]
        console.send_signal(signal.SIGKILL)
        console.wait()
        os.killpg(lost_pid, signal.SIGKILL)
        console, url = launch_console(workspace)
        client = console_client(url)
        job = wait_until(lambda: ended(lost), 10, "the lost job to be reaped after the restart")
        assert job["status"] == "failed"
        assert job["error"].startswith(
            "interrupted: the trainer stopped while the console was not running")
        # A few steps past its last checkpoint, wherever a busy machine let it get to.
        end = int(job["last_checkpoint"].split("-")[1]) + 3
        assert client.predict(lost, None, {"max_steps": end}, False,
                              api_name="/resume_job")["status"] == "queued"
        job = wait_until(lambda: ended(lost, ("queued", "running")), 120,
                         "the resumed lost job to end")
        assert job["status"] == "completed", job["error"]
        assert job["progress"]["step"] == end
    finally:
        stop_console(console)
