"""The queue: bad submissions, refused actions, the workspace lock (start order
and cancel: tests/test_teams.py)."""

import os

import pytest

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER
from engine.console.records.job import IllegalTransition
from engine.console.records.store import JobNotFound
from engine.console.records.workspace import WorkspaceBusy

BAD_SUBMISSIONS = [
    ({"learning_rate": 0}, "learning_rate must be > 0"),
    ({"adapter": "dora"}, "adapter must be one of lora, qlora, full"),
    ({"lora_rank": 8}, "unknown field 'lora_rank'"),
    ({"model": "Org/does-not-exist"},
     "model Org/does-not-exist: not in the local Hugging Face cache"),
    ({"dataset": "/no/such/file.jsonl"}, "dataset /no/such/file.jsonl: no such file"),
]


def test_bad_submissions_are_refused_and_queue_nothing(local_engine, tmp_path):
    engine = local_engine
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
            engine.jobs.submit(LOCAL_USER, config)
        assert message in str(err.value), (config, str(err.value))
    assert engine.views.list_jobs(LOCAL_USER) == []
    assert list(engine.workspace.jobs_dir.iterdir()) == []


@pytest.mark.slow
def test_actions_on_unknown_or_finished_jobs_are_refused(default_run):
    engine, job, _ = default_run
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        engine.views.get_job(LOCAL_USER, "nope")
    with pytest.raises(IllegalTransition, match="is completed; it cannot become cancelled"):
        engine.jobs.cancel(LOCAL_USER, job["job_id"])
    with pytest.raises(IllegalTransition, match="cannot become queued"):
        engine.jobs.resume(LOCAL_USER, job["job_id"])
    with pytest.raises(ConfigError, match="status must be one of queued"):
        engine.views.list_jobs(LOCAL_USER, "finished")
    assert engine.views.get_job(LOCAL_USER, job["job_id"])["status"] == "completed"


def test_a_second_console_on_the_same_workspace_is_refused(local_engine):
    second = Engine(local_engine.workspace.root, warm_start=False)
    with pytest.raises(WorkspaceBusy) as err:
        second.open()
    assert f"process {os.getpid()}" in str(err.value)
