"""How a job ends: killed at any point of its last step, its final save or its exit, then
resumed, it ends where a straight run ends; stopped by a cluster's notice, it is never taken for
a person's pause. Real trainers, faults injected with TRAINDECK_FAULTS."""

import json

import pytest
import torch
from conftest import losses, wait_for_status
from exact_runs import EVALUATED, EXACT, final_tensors, straight_run

from engine.console.people.users import LOCAL_USER
from engine.jobfiles import read_json

pytestmark = pytest.mark.slow  # real trainers


# 85 rows less a tenth held out: 5 optimizer steps an epoch. Ending at step 4 is off the epoch's
# end, where transformers, resumed from the last step's checkpoint, trained one step more.
# checkpoint-3 is there for a kill before checkpoint-4 is complete; evaluated at 3 and at the end.
END = {**EXACT, "max_steps": 4, "save_steps": 3, "eval_split": 0.1, "eval_steps": 3}
KILL_POINTS = {"saving-the-last-checkpoint": "kill-in-save:4", "before-model": "kill-before-model",
               "saving-model": "kill-in-model-save", "before-exit": "kill-before-exit"}


def trained_values(metrics: list[dict]) -> list[tuple]:
    """What a record says of the training (not of its speed or time)."""
    return [(m["step"], m.get("loss"), m.get("grad_norm"), m.get("learning_rate"),
             m.get("eval_loss")) for m in metrics]


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_at_its_end_then_resumed_equals_a_straight_run(exact_engine, point):
    engine = exact_engine
    straight = straight_run(engine, END)
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": KILL_POINTS[point]}
    job_id = engine.jobs.submit(LOCAL_USER, {**END, "name": point})["job_id"]
    killed = wait_for_status(engine, job_id)
    engine.supervisor.extra_env = {}
    assert killed["status"] == "failed" and "SIGKILL" in killed["error"], killed["error"]
    paths = engine.workspace.job_paths(job_id)
    assert paths.final_model.exists() == (point == "before-exit")  # whole, or not there at all

    engine.jobs.resume(LOCAL_USER, job_id)
    done = wait_for_status(engine, job_id)
    assert done["status"] == "completed", done["error"]
    assert done["progress"]["step"] == 4 and done["attempt"] == 2
    assert [c["name"] for c in engine.views.list_checkpoints(LOCAL_USER, job_id)] == \
        ["checkpoint-3", "checkpoint-4"]
    log = paths.log.read_text()
    resumed_from = "checkpoint-3" if point == "saving-the-last-checkpoint" else "checkpoint-4"
    assert f"resuming from {resumed_from}" in log and "step 5" not in log
    expected = trained_values(engine.views.get_metrics(LOCAL_USER, straight, 0))
    assert [step for step, *_ in expected] == [1, 2, 3, 4]
    assert [step for step, *_, eval_loss in expected if eval_loss] == [3, 4]
    assert trained_values(engine.views.get_metrics(LOCAL_USER, job_id, 0)) == expected  # bitwise
    a, b = final_tensors(engine, straight), final_tensors(engine, job_id)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = read_json(paths.summary)
    assert summary["global_step"] == summary["max_steps"] == 4
    if resumed_from == "checkpoint-4":  # nothing trained again: the first attempt's summary
        assert summary["train_loss"] == \
            read_json(engine.workspace.job_paths(straight).summary)["train_loss"]


@pytest.mark.slow
def test_a_cluster_notice_at_a_step_end_is_never_taken_for_a_pause(exact_engine):
    """Slurm's SIGTERM (a requeue or preemption) landing as the trainer starts, before it has
    imported the training libraries: it is noted, not fatal; the trainer checkpoints at the
    first step's end and records that the cluster stopped it, so the console, which asked for
    nothing, fails the job with that cause (resumable, and resumed exactly) instead of calling
    it paused. A SIGTERM and a person's pause request meeting at one step's end: the pause wins
    and stays a pause."""
    engine = exact_engine
    straight = straight_run(engine, EVALUATED)  # the one test_resilience compares with
    slurm = {"SLURM_JOB_ID": "4242"}  # the trainer listens for the cluster's notices
    engine.supervisor.extra_env = {**slurm, "TRAINDECK_FAULTS": "sigterm-at-start"}
    noticed = engine.jobs.submit(LOCAL_USER, {**EVALUATED, "name": "noticed"})["job_id"]
    job = wait_for_status(engine, noticed)
    # Micro-batch 12 is step 3's last: its pause request and the SIGTERM meet at that step's end.
    engine.supervisor.extra_env = {**slurm, "TRAINDECK_FAULTS":
                                   "sigterm-at-step:3,pause-at-microstep:12"}
    both = engine.jobs.submit(LOCAL_USER, {**EVALUATED, "name": "both"})["job_id"]
    paused = wait_for_status(engine, both)
    engine.supervisor.extra_env = slurm  # resumed as the cluster would (and by the same spare)
    assert job["status"] == "failed" and job["last_checkpoint"] == "checkpoint-1", job["error"]
    assert job["error"].startswith("the cluster stopped the job (SIGTERM) and did not queue it")
    record = json.loads(engine.workspace.job_paths(noticed).exit_record.read_text())
    assert (record["code"], record["stopped_for"], record["notice"]) == (
        75, "cluster notice", "SIGTERM")
    assert paused["status"] == "paused" and paused["last_checkpoint"] == "checkpoint-3"
    record = json.loads(engine.workspace.job_paths(both).exit_record.read_text())
    assert (record["code"], record["stopped_for"], "notice" in record) == (75, "request", False)
    engine.jobs.resume(LOCAL_USER, noticed)
    assert wait_for_status(engine, noticed)["status"] == "completed"
    assert losses(engine.views.get_metrics(LOCAL_USER, noticed, 0)) == losses(
        engine.views.get_metrics(LOCAL_USER, straight, 0))
