"""Old workspaces still load: job records written by TrainDeck before the stored record became a
pydantic model (tests/fixtures/records_v1, made by make_records_v1.py at commit d5ad21a) read
back unchanged, and damaged or unexpected records are read made safe, never refused whole."""

import json
import shutil
from pathlib import Path

import pytest

from engine.config import SCHEMA, JobConfig
from engine.console.records.job import Job, JobStatus, record_problems
from engine.console.records.store import MemoryJobStore, TinyDBJobStore

FIXTURE = Path(__file__).parent / "fixtures" / "records_v1"


@pytest.fixture
def old_database(tmp_path):
    shutil.copy(FIXTURE / "jobs.json", tmp_path / "jobs.json")
    return tmp_path / "jobs.json"


def stored_documents(path: Path) -> list[dict]:
    return list(json.loads(path.read_text())["jobs"].values())


def as_written(loaded: dict, document: dict) -> dict:
    """The loaded record without the config fields added after `document` was written, which
    must hold their defaults."""
    config = loaded["config"]
    added = {name: value for name, value in config.items() if name not in document["config"]}
    assert added == {name: SCHEMA[name].default for name in added}
    return {**loaded, "config": {k: v for k, v in config.items() if k in document["config"]}}


def test_records_written_by_the_old_version_load_unchanged(old_database):
    documents = stored_documents(old_database)
    assert {d["status"] for d in documents} == {s.value for s in JobStatus}
    store = TinyDBJobStore(old_database)
    jobs = {job.job_id: job for job in store.all()}
    store.close()
    for document in documents:
        job = jobs[document["job_id"]]
        assert not job.damaged and record_problems(document) == []
        assert isinstance(job.config, JobConfig)
        assert as_written(job.to_dict(), document) == document  # as written, config included
    assert stored_documents(old_database) == documents  # reading wrote nothing


def test_a_record_without_the_fields_added_over_time_takes_their_defaults():
    sparse = json.loads((FIXTURE / "record_sparse.json").read_text())
    assert "attempts" not in sparse and "sweep" not in sparse
    assert record_problems(sparse) == []
    job = Job.from_dict(sparse)
    assert (job.status, job.exit_code, job.error) == ("failed", 1, "the trainer crashed")
    assert (job.attempts, job.sweep, job.shared, job.microbatch_changes) == ([], None, False, [])
    folder_copy = json.loads((FIXTURE / "record.json").read_text())
    assert as_written(Job.from_dict(folder_copy).to_dict(), folder_copy) == folder_copy


def test_unknown_keys_are_ignored_in_memory_and_kept_on_disk(old_database):
    data = json.loads(old_database.read_text())
    data["jobs"]["1"]["from_a_newer_version"] = {"anything": [1, 2]}
    old_database.write_text(json.dumps(data))
    store = TinyDBJobStore(old_database)
    job = store.get("20251124-160000-0001")
    assert not job.damaged and "from_a_newer_version" not in job.to_dict()
    store.update(job.job_id, priority=4)
    store.close()
    kept = json.loads(old_database.read_text())["jobs"]["1"]
    assert kept["from_a_newer_version"] == {"anything": [1, 2]} and kept["priority"] == 4


def test_a_damaged_record_is_read_made_safe_and_says_what_was_wrong(old_database):
    data = json.loads(old_database.read_text())
    data["jobs"]["4"].update(priority="high", status="finished", attempts={"1": "x"})
    old_database.write_text(json.dumps(data))
    store = TinyDBJobStore(old_database)
    job = store.get("20251124-160000-0004")
    assert (job.status, job.priority, job.attempts) == ("failed", 0, [])
    assert job.progress == {"step": 30, "total_steps": 30, "loss": 1.25}  # good fields are kept
    assert "priority: must be a whole number from -2147483648 to 2147483648, got 'high'" \
        in job.damaged
    assert "status: must be one of queued, running, paused, completed, failed, cancelled" \
        in job.damaged
    assert "attempts: must be a list" in job.damaged
    assert not store.get("20251124-160000-0001").damaged
    store.close()


@pytest.mark.parametrize("fields, words", [
    ({"priority": "high"}, "priority: must be a whole number"),
    ({"status": "done"}, "status: must be one of queued, running"),
    ({"pid": 1.5}, "pid: must be a whole number or null, got 1.5"),
    ({"requested": "stop"}, "requested: must be one of pause, cancel or null"),
    ({"shared": 1}, "shared: must be true or false, got 1"),
])
def test_a_store_refuses_a_field_the_record_does_not_allow_and_changes_nothing(fields, words):
    store = MemoryJobStore()
    store.add(Job(job_id="j1", name="j", config=JobConfig()))
    before = store.get("j1").to_dict()
    with pytest.raises(ValueError, match=words):
        store.update("j1", **fields)
    assert store.get("j1").to_dict() == before
