"""The queue with real trainers: start order, cancel, bad submissions, the workspace lock."""

import time

import pytest

from engine.api import Engine
from engine.config import ConfigError
from engine.job import IllegalTransition
from engine.store import JobNotFound
from engine.workspace import WorkspaceBusy

from conftest import QUICK, processes_of, wait_for_status, wait_for_step

LONG = {"max_steps": 100000, "save_steps": 100000, "learning_rate": 1e-3}


def test_jobs_start_by_priority_then_age_and_cancel_works(engine):
    blocker = engine.submit({**LONG, "name": "blocker"})["job_id"]
    wait_for_step(engine, blocker)
    a = engine.submit({**QUICK, "max_steps": 2, "name": "a"})
    b = engine.submit({**QUICK, "max_steps": 2, "name": "b", "priority": 5})
    c = engine.submit({**QUICK, "max_steps": 2, "name": "c"})
    doomed = engine.submit({**QUICK, "max_steps": 2, "name": "doomed", "priority": 9})
    # Each position is the one at its submit: b and doomed jumped ahead by priority.
    assert [a["position"], b["position"], c["position"], doomed["position"]] == [1, 1, 3, 1]

    cancelled = engine.cancel(doomed["job_id"])  # queued: cancelled at once
    assert cancelled["status"] == "cancelled"
    assert engine.position(b["job_id"]) == 1

    job_file = engine.workspace.job_paths(blocker).job_file
    assert processes_of(job_file)
    asked = time.time()
    engine.cancel(blocker)
    assert engine.get_job(blocker)["requested"] == "cancel"
    stopped = wait_for_status(engine, blocker, timeout=30)
    assert stopped["status"] == "cancelled"
    assert time.time() - asked < 5
    assert processes_of(job_file) == []  # the trainer and anything it spawned are gone

    finished = [wait_for_status(engine, j["job_id"]) for j in (a, b, c)]
    assert all(j["status"] == "completed" for j in finished)
    order = sorted(finished, key=lambda j: j["started_at"])
    assert [j["name"] for j in order] == ["b", "a", "c"]
    never = engine.get_job(doomed["job_id"])
    assert never["started_at"] is None and never["attempts"] == []
    assert not engine.workspace.job_paths(doomed["job_id"]).metrics.exists()


BAD_SUBMISSIONS = [
    ({"learning_rate": 0}, "learning_rate must be > 0"),
    ({"adapter": "dora"}, "adapter must be one of lora, qlora, full"),
    ({"lora_rank": 8}, "unknown field 'lora_rank'"),
    ({"model": "Org/does-not-exist"}, "model Org/does-not-exist: not in the local Hugging Face cache"),
    ({"dataset": "/no/such/file.jsonl"}, "dataset /no/such/file.jsonl: no such file"),
]


def test_bad_submissions_are_refused_and_queue_nothing(engine, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": oops}\n')
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"messages": [{"role": "user", "content": "q"}, '
                    '{"role": "assistant", "content": "a"}]}\n')
    cases = BAD_SUBMISSIONS + [
        ({"dataset": str(broken)}, f"dataset {broken}: line 3 is not valid JSON"),
        ({"dataset": str(missing)}, f"dataset {missing}: line 2: output: missing"),
        ({"dataset": str(empty)}, f"dataset {empty}: the file is empty"),
        ({"preset": "dpo-preference", "dataset": str(chat)},
         "its format is messages, but method dpo needs preference"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError) as err:
            engine.submit(config)
        assert message in str(err.value), (config, str(err.value))
    assert engine.list_jobs() == []
    assert list(engine.workspace.jobs_dir.iterdir()) == []


def test_actions_on_unknown_or_finished_jobs_are_refused(default_run):
    engine, job, _ = default_run
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        engine.get_job("nope")
    with pytest.raises(IllegalTransition, match="is completed; it cannot become cancelled"):
        engine.cancel(job["job_id"])
    with pytest.raises(IllegalTransition, match="cannot become queued"):
        engine.resume(job["job_id"])
    with pytest.raises(ConfigError, match="status must be one of queued"):
        engine.list_jobs("finished")
    assert engine.get_job(job["job_id"])["status"] == "completed"


def test_a_second_console_on_the_same_workspace_is_refused(engine):
    import os

    second = Engine(engine.workspace.root)
    with pytest.raises(WorkspaceBusy) as err:
        second.open()
    assert f"process {os.getpid()}" in str(err.value)
