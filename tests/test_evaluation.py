"""Evaluation during training, on the tiny model: eval loss at every eval_steps, the best
checkpoint chosen by it and kept from rotation, and early stopping of a job whose eval loss stops
improving. Pause/resume with evaluation on is in test_resilience.py."""

import json

import pytest
import torch
from conftest import QUICK, open_engine, shutdown, wait_for_status
from safetensors.torch import load_file

from engine.console.people.users import LOCAL_USER

pytestmark = pytest.mark.slow  # real trainers


def chat_rows(answer: str, count: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": " ".join([answer] * 20)}]}
            for i in range(count)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


# Trained to answer "yes" and evaluated on answers of "no": after the chat template is learned
# (the first evaluation), every step makes "no" less likely, so the eval loss rises from then on.
DIVERGING = {**QUICK, "save_steps": 2, "save_total_limit": 2, "per_device_train_batch_size": 4,
             "warmup_steps": 0}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluation")
    engine = open_engine(folder / "workspace")
    train = write_jsonl(folder / "yes.jsonl", chat_rows("yes", 64))
    held = write_jsonl(folder / "no.jsonl", chat_rows("no", 8))
    configs = {
        "held-out": {**QUICK, "eval_split": 0.1, "eval_steps": 3, "save_steps": 6},
        "shorter than an interval": {**QUICK, "max_steps": 5, "eval_split": 0.1},
        "diverging": {**DIVERGING, "dataset": train, "eval_dataset": held},
        "stopped": {**DIVERGING, "dataset": train, "eval_dataset": held,
                    "early_stopping_patience": 2},
    }
    ids = {name: engine.jobs.submit(LOCAL_USER, {**config, "name": name})["job_id"]
           for name, config in configs.items()}
    jobs = {name: wait_for_status(engine, job_id, timeout=300) for name, job_id in ids.items()}
    yield engine, jobs
    shutdown(engine)


def eval_losses(metrics):
    return {m["step"]: m["eval_loss"] for m in metrics if "eval_loss" in m}


def test_a_held_out_split_is_evaluated_at_every_eval_steps(evaluated):
    engine, jobs = evaluated
    job = jobs["held-out"]
    assert job["status"] == "completed", job["error"]
    metrics = engine.views.get_metrics(LOCAL_USER, job["job_id"], 0)
    assert sorted(eval_losses(metrics)) == [3, 6, 9, 12]
    # Each evaluation joins its step's training record: one record a step, loss and eval loss.
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert all("loss" in m for m in metrics)
    analytics = engine.views.job_analytics(LOCAL_USER, job["job_id"])
    assert analytics["evaluations"] == 4
    assert analytics["best_eval_loss"] == min(eval_losses(metrics).values())
    log = engine.workspace.job_paths(job["job_id"]).log.read_text()
    assert "dataset: 77 rows to train on (8 to evaluate on)" in log  # 85 rows, 10% held out


def test_a_run_shorter_than_its_eval_interval_is_evaluated_at_its_end(evaluated):
    engine, jobs = evaluated
    job = jobs["shorter than an interval"]  # eval_steps auto: save_steps, 100
    assert job["status"] == "completed", job["error"]
    assert list(eval_losses(engine.views.get_metrics(LOCAL_USER, job["job_id"], 0))) == [5]
    assert engine.views.job_analytics(LOCAL_USER, job["job_id"])["evaluations"] == 1
    assert "stopped_early" not in engine.views.job_analytics(LOCAL_USER, job["job_id"])


def test_the_best_checkpoint_is_the_lowest_eval_loss_and_is_never_rotated_away(evaluated):
    engine, jobs = evaluated
    job = jobs["diverging"]
    assert job["status"] == "completed", job["error"]
    evals = eval_losses(engine.views.get_metrics(LOCAL_USER, job["job_id"], 0))
    assert sorted(evals) == [2, 4, 6, 8, 10, 12]
    best_step = min(evals, key=evals.get)
    assert best_step < 12  # the constructed case: the eval loss got worse after it
    checkpoints = engine.views.list_checkpoints(LOCAL_USER, job["job_id"])
    names = {c["name"] for c in checkpoints}
    # save_total_limit 2: the newest one and the best one, which rotation spared.
    assert names == {f"checkpoint-{best_step}", "checkpoint-12"}
    best = [c for c in checkpoints if c["best"]]
    assert [c["name"] for c in best] == [f"checkpoint-{best_step}"]
    assert best[0]["eval_loss"] == evals[best_step]


def test_early_stopping_ends_a_job_whose_eval_loss_stopped_improving(evaluated):
    engine, jobs = evaluated
    job, full = jobs["stopped"], jobs["diverging"]
    assert job["status"] == "completed", job["error"]
    evals = eval_losses(engine.views.get_metrics(LOCAL_USER, full["job_id"], 0))
    best_step = min(evals, key=evals.get)
    stop_step = best_step + 2 * 2  # two evaluations (every 2 steps) without improvement
    assert job["progress"]["step"] == stop_step
    analytics = engine.views.job_analytics(LOCAL_USER, job["job_id"])
    assert analytics["stopped_early"].startswith("eval loss has not improved for 2 evaluations")
    assert f"at step {best_step}" in analytics["stopped_early"]
    assert engine.workspace.job_paths(job["job_id"]).final_model.exists()


def test_an_early_stopped_job_killed_at_its_end_resumes_to_the_same_end(evaluated):
    """Resumed from the checkpoint of the evaluation that stopped it, a job trains no further."""
    engine, jobs = evaluated
    stopped = jobs["stopped"]
    engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "kill-before-model"}
    job_id = engine.jobs.submit(LOCAL_USER,
                                {**stopped["config"], "name": "stopped, killed"})["job_id"]
    assert wait_for_status(engine, job_id, timeout=300)["status"] == "failed"
    engine.supervisor.extra_env = {}
    engine.jobs.resume(LOCAL_USER, job_id)
    done = wait_for_status(engine, job_id, timeout=300)
    assert done["status"] == "completed", done["error"]
    step = stopped["progress"]["step"]
    assert done["progress"]["step"] == step
    assert f"resuming from checkpoint-{step}" in \
        engine.workspace.job_paths(job_id).log.read_text()
    assert engine.views.job_analytics(LOCAL_USER, job_id)["stopped_early"] == \
        engine.views.job_analytics(LOCAL_USER, stopped["job_id"])["stopped_early"]
    assert eval_losses(engine.views.get_metrics(LOCAL_USER, job_id, 0)) == \
        eval_losses(engine.views.get_metrics(LOCAL_USER, stopped["job_id"], 0))
    models = [load_file(engine.workspace.job_paths(j).final_model / "adapter_model.safetensors")
              for j in (stopped["job_id"], job_id)]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
