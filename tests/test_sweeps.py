"""Sweeps: the request's shape (no training), all-or-nothing queueing within quotas (an engine
whose scheduler does not run), and a real sweep through gradio_client against the console (two
runs: the grid's combinations are the unit tests' to cover)."""

import pytest
from harness import console_client, stop_console, wait_until
from harness import start_console as launch_console

from engine.config import ConfigError
from engine.console.jobs.sweep_spec import MAX_RUNS, parse_sweep
from engine.console.people.users import NotYourJob, QuotaExceeded


def test_a_grid_is_every_combination_in_order():
    spec = parse_sweep({"base": {"max_steps": 4},
                        "grid": {"learning_rate": [1e-4, 3e-4], "lora_r": [8, 16]}})
    assert spec.runs == ({"learning_rate": 1e-4, "lora_r": 8},
                         {"learning_rate": 1e-4, "lora_r": 16},
                         {"learning_rate": 3e-4, "lora_r": 8},
                         {"learning_rate": 3e-4, "lora_r": 16})
    assert spec.base == {"max_steps": 4} and spec.name == "sweep"


def test_a_random_sample_is_drawn_by_its_seed_within_its_ranges():
    request = {"random": {"learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
                          "lora_r": [4, 8, 16]}, "trials": 6, "seed": 3}
    runs = parse_sweep(request).runs
    assert len(runs) == 6 and parse_sweep(request).runs == runs
    assert all(1e-5 <= r["learning_rate"] <= 1e-3 and r["lora_r"] in (4, 8, 16) for r in runs)
    assert parse_sweep({**request, "seed": 4}).runs != runs


@pytest.mark.parametrize("request_, message", [
    ([1, 2], "sweep must be an object"),
    ({"grid": {"learning_rate": [1]}, "random": {"lora_r": [8]}}, "exactly one of grid"),
    ({"base": {}}, "exactly one of grid"),
    ({"grid": {"learning_rate": []}}, "learning_rate must be a list of 1 to 32 values"),
    ({"grid": {"lerning_rate": [1e-4]}}, "did you mean learning_rate?"),
    ({"grid": {"name": ["a", "b"]}}, "name cannot be swept"),
    ({"grid": {"lora_r": list(range(1, 7)), "max_steps": list(range(1, 7))}},
     f"36 combinations; at most {MAX_RUNS}"),
    ({"random": {"learning_rate": {"low": 1, "high": 0}}}, "needs numbers low < high"),
    ({"random": {"adapter": {"low": 1, "high": 2}}}, "adapter is not a number"),
    ({"random": {"lora_r": [8]}, "trials": 1000}, "trials must be a whole number from 0 to 32"),
    ({"grid": {"lora_r": [8]}, "colour": "red"}, "unknown key 'colour'"),
])
def test_a_malformed_sweep_is_refused_with_what_to_change(request_, message):
    with pytest.raises(ConfigError) as err:
        parse_sweep(request_)
    assert message in str(err.value)


def test_a_sweep_is_queued_whole_or_not_at_all(idle_engine):
    engine = idle_engine
    bob, carol = engine.users.get("bob"), engine.users.get("carol")
    with pytest.raises(ConfigError, match=r"sweep run 2 \(learning_rate=-1\): learning_rate"):
        engine.sweeps.submit(carol, {"grid": {"learning_rate": [1e-4, -1]}})
    with pytest.raises(QuotaExceeded, match="has 0 jobs queued and asks for 3 more"):
        engine.sweeps.submit(bob, {"grid": {"lora_r": [4, 8, 16]}})  # max_queued_jobs 2
    assert engine.store.all() == []
    assert list(engine.workspace.job_paths("any").root.parent.glob("*")) == []  # no folder left
    sweep = engine.sweeps.submit(bob, {"name": "ranks", "grid": {"lora_r": [4, 8]},
                                       "priority": 7})
    jobs = [engine.store.get(job_id) for job_id in sweep["job_ids"]]
    assert [j.config.lora_r for j in jobs] == [4, 8] and {j.priority for j in jobs} == {7}
    assert [j.name for j in jobs] == ["ranks #1 lora_r=4", "ranks #2 lora_r=8"]
    with pytest.raises(NotYourJob):
        engine.sweeps.cancel(carol, sweep["sweep_id"])
    assert {j.status for j in engine.store.all()} == {"queued"}  # nothing of bob's was touched
    assert engine.sweeps.cancel(bob, sweep["sweep_id"])["cancelled"] == sweep["job_ids"]
    with pytest.raises(ConfigError, match="no sweep with id 'nope'"):
        engine.sweeps.get(carol, "nope")


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    process, url = launch_console(tmp_path_factory.mktemp("sweeps") / "workspace")
    yield console_client(url)
    stop_console(process)


def settled(client, job_ids):
    return all(client.predict(j, api_name="/get_job")["status"] in
               ("completed", "failed", "cancelled") for j in job_ids)


@pytest.mark.slow
def test_a_sweep_runs_its_jobs_and_names_the_best_by_eval_loss(console):
    client = console
    sweep = client.predict({"name": "lr x rank", "base": {"max_steps": 4, "eval_split": 0.1,
                                                          "save_steps": 2},
                            "grid": {"learning_rate": [1e-4, 5e-3], "lora_r": [4]}},
                           api_name="/submit_sweep")
    assert len(sweep["job_ids"]) == 2
    wait_until(lambda: settled(client, sweep["job_ids"]), 240, "the two runs of the sweep")
    jobs = [client.predict(j, api_name="/get_job") for j in sweep["job_ids"]]
    assert {j["status"] for j in jobs} == {"completed"}
    assert {j["sweep"]["id"] for j in jobs} == {sweep["sweep_id"]}
    summary = client.predict(sweep["sweep_id"], api_name="/get_sweep")
    assert summary["ranked_by"] == "eval_loss" and summary["counts"] == {"completed": 2}
    losses = {r["job_id"]: r["best_eval_loss"] for r in summary["runs"]}
    best = min(losses, key=losses.get)
    assert summary["best"]["job_id"] == best == summary["runs"][0]["job_id"]
    assert summary["best"]["eval_loss"] == losses[best]
    for run in summary["runs"]:  # each run's eval loss is the one its metrics recorded
        metrics = client.predict(run["job_id"], 0, api_name="/get_metrics")
        assert run["best_eval_loss"] == min(m["eval_loss"] for m in metrics if "eval_loss" in m)
    listed = client.predict(api_name="/list_sweeps")
    assert listed[0]["sweep_id"] == sweep["sweep_id"] and listed[0]["runs"] == 2


@pytest.mark.slow
def test_cancelling_a_sweep_cancels_what_has_not_finished(console):
    client = console
    sweep = client.predict({"base": {"learning_rate": 1e-3, "save_steps": 5},
                            "grid": {"max_steps": [2, 100000]}}, api_name="/submit_sweep")
    short, long = sweep["job_ids"]
    wait_until(lambda: client.predict(short, api_name="/get_job")["status"] == "completed", 120,
               "the short run to complete")
    wait_until(lambda: client.predict(long, api_name="/get_job")["status"] == "running", 120,
               "the long run to start")
    result = client.predict(sweep["sweep_id"], api_name="/cancel_sweep")
    assert result["cancelled"] == [long] and result["kept"] == [short]
    wait_until(lambda: client.predict(long, api_name="/get_job")["status"] == "cancelled", 60,
               "the long run to stop")
    assert client.predict(short, api_name="/get_job")["status"] == "completed"
