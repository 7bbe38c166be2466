"""`repair-db` rebuilding records from job folders written by hand: each way a trainer can end is
read with the supervisor's table of exit meanings, and each record reaches its status through the
state machine's writer (its stamps, no leftover request or pid). The end-to-end repair of a
damaged database after real training is in tests/test_security.py."""

import json

import pytest
import yaml

from engine.console.records.store import TinyDBJobStore
from engine.console.records.workspace import Workspace
from engine.console.running.repair import repair
from engine.jobfiles import PAUSE, JobPaths, request

CREATED, STARTED, ENDED = 1_700_000_000.0, 1_700_000_100.0, 1_700_000_200.0
INVALID_LINE = "error: dataset: line 3 is not valid JSON"


def job_folder(workspace: Workspace, job_id: str, exit_code: int | None = None,
               log: str | None = None, record: dict | None = None) -> JobPaths:
    """A job folder as a trainer (and the console's record copy, when given) leaves it."""
    paths = workspace.job_paths(job_id)
    paths.root.mkdir(parents=True)
    paths.job_file.write_text(yaml.safe_dump({
        "job_id": job_id, "name": f"name of {job_id}", "config": {"max_steps": 10},
        "owner": "bob", "priority": 0, "seq": 1, "created_at": CREATED}))
    if log is not None:
        paths.log.write_text(log)
    if exit_code is not None:
        paths.exit_record.write_text(json.dumps({"pid": 4242, "code": exit_code, "time": ENDED}))
    if record is not None:
        paths.record.write_text(json.dumps(record))
    return paths


def repaired(workspace: Workspace) -> dict[str, dict]:
    repair(workspace)
    store = TinyDBJobStore(workspace.database)
    try:
        return {job.job_id: job.to_dict() for job in store.all()}
    finally:
        store.close()


@pytest.mark.parametrize("exit_code, log, status, error", [
    (0, "done\n", "completed", None),
    (75, "paused at step 5\n", "paused", None),
    (76, "cancelled\n", "cancelled", None),
    # The trainer's own reason, as the supervisor shows it (not "see its log").
    (2, f"loading\n{INVALID_LINE}\n", "failed", "dataset: line 3 is not valid JSON"),
    (1, "Traceback (most recent call last):\nRuntimeError: boom\n", "failed",
     "the trainer exited with code 1\nTraceback (most recent call last):\nRuntimeError: boom"),
    (None, "step 3\n", "failed",
     "interrupted: the trainer stopped while the console was not running. Resume continues "
     "from the last checkpoint.\nstep 3"),
    (None, None, "queued", None),  # never started
])
def test_each_ending_is_read_with_the_supervisors_table(tmp_path, exit_code, log, status,
                                                         error):
    workspace = Workspace(tmp_path / "workspace")
    job_folder(workspace, "20261201-101010-abcd", exit_code, log)
    job = repaired(workspace)["20261201-101010-abcd"]
    assert (job["status"], job["error"]) == (status, error)
    if exit_code is not None:
        assert job["exit_code"] == exit_code
    if status != "queued":  # stamped by the status writer: started, then ended
        assert job["started_at"] is not None and job["attempt"] == 1
        ended = job["paused_at"] if status == "paused" else job["finished_at"]
        assert ended == (ENDED if exit_code is not None else job["started_at"])


def test_a_trainer_killed_while_pausing_is_paused_not_failed(tmp_path):
    """As the supervisor has it: a pause was asked, and the trainer died without an exit record
    (killed during its checkpoint); it pauses at its last complete checkpoint."""
    workspace = Workspace(tmp_path / "workspace")
    paths = job_folder(workspace, "20261201-101010-abcd", log="step 7\n")
    request(paths, PAUSE)
    job = repaired(workspace)["20261201-101010-abcd"]
    assert job["status"] == "paused" and job["error"] is None


def test_a_kept_record_that_says_running_ends_through_the_state_machine(tmp_path):
    workspace = Workspace(tmp_path / "workspace")
    running = {"job_id": "20261201-101010-aaaa", "name": "kept", "config": {"max_steps": 10},
               "owner": "bob", "status": "running", "seq": 1, "created_at": CREATED,
               "queued_at": CREATED, "started_at": STARTED, "pid": 4242, "attempt": 2,
               "requested": "pause"}
    job_folder(workspace, "20261201-101010-aaaa", 75, "paused\n", record=running)
    # Its copy says running, but the trainer left no log, no exit record and no live process.
    job_folder(workspace, "20261201-101010-bbbb",
               record={**running, "job_id": "20261201-101010-bbbb", "requested": None})
    jobs = repaired(workspace)
    paused = jobs["20261201-101010-aaaa"]
    assert paused["status"] == "paused" and paused["paused_at"] == ENDED
    assert (paused["requested"], paused["pid"], paused["attempt"]) == (None, None, 2)
    gone = jobs["20261201-101010-bbbb"]  # not back to queued: running may not become queued
    assert gone["status"] == "failed" and gone["error"].startswith("interrupted")
    assert gone["pid"] is None and gone["finished_at"] is not None


def test_a_job_file_with_odd_values_is_still_rebuilt(tmp_path):
    """job.yaml values the record does not allow never stop repair-db: implausible ones take
    their defaults (it renumbers submit order anyway), wrong types mark the job damaged."""
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    job_folder(workspace, "20261130-000000-aaaa")
    odd = job_folder(workspace, "20261130-000000-bbbb")
    odd.job_file.write_text(yaml.safe_dump({
        "name": "odd", "config": {"max_steps": 10}, "owner": "bob", "priority": 2**40, "seq": -3,
        "created_at": float("nan")}))
    jobs = repaired(workspace)
    assert jobs["20261130-000000-bbbb"]["priority"] == 0
    assert sorted(job["seq"] for job in jobs.values()) == [1, 2]
    assert "created_at" in jobs["20261130-000000-bbbb"]["damaged"]
    assert not jobs["20261130-000000-aaaa"]["damaged"]
