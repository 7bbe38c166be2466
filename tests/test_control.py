"""What people do to jobs, on an engine that schedules nothing (no trainer starts): resume with
changes goes through the same resolution as a submit; what resume may not change; sharing and
deleting."""

import pytest
from conftest import lock_is_free

from engine.config import ConfigError
from engine.console.jobs import submission
from engine.console.records.job import IllegalTransition, JobStatus
from engine.console.records.store import StorageError


@pytest.fixture
def paused(idle_engine, team):
    bob = team.get("bob")
    job_id = idle_engine.jobs.submit(bob, {"max_steps": 5})["job_id"]
    idle_engine.jobs.pause(bob, job_id)
    return idle_engine, bob, job_id


def test_resume_resolves_auto_like_a_submit(paused):
    """Regression: resume used to store the literal "auto", which the trainer compared with 0."""
    engine, bob, job_id = paused
    engine.jobs.resume(bob, job_id, changes={"dataloader_num_workers": "auto",
                                             "dataloader_prefetch_factor": "auto",
                                             "precision": "auto"})
    job = engine.views.get_job(bob, job_id)
    assert job["status"] == JobStatus.QUEUED
    assert job["config"]["dataloader_num_workers"] == 0  # what auto is on a CPU
    assert job["config"]["dataloader_prefetch_factor"] is None
    assert job["config"]["precision"] == "fp32"
    assert job["resolved"]["dataloader_num_workers"] == 0


def test_resume_changes_are_checked_like_a_submit(paused):
    engine, bob, job_id = paused
    for changes, words in (({"learning_rate": -1}, "learning_rate must be > 0"),
                           ({"lerning_rate": 1e-3}, "did you mean learning_rate"),
                           ({"max_steps": 10**9}, "max_steps must be <= 10000000"),
                           ({"lora_r": 8}, "cannot change lora_r on resume"),
                           ({"dataset": "/etc/passwd"}, "not a place this console reads from"),
                           ({"max_steps": 500}, "quota max_steps: bob may use at most 50"),
                           ("learning_rate=1", "changes must be an object")):
        with pytest.raises(ConfigError, match=words):
            engine.jobs.resume(bob, job_id, changes=changes)
        assert engine.views.get_job(bob, job_id)["status"] == JobStatus.PAUSED  # nothing changed
    # No checkpoint yet: nothing to continue exactly, so a new seed needs no allow_inexact.
    engine.jobs.resume(bob, job_id, changes={"seed": 7, "learning_rate": 1e-3})
    config = engine.views.get_job(bob, job_id)["config"]
    assert config["seed"] == 7 and config["learning_rate"] == 1e-3


def test_resume_refuses_an_end_before_its_checkpoint(paused):
    """A job resumed from checkpoint-10 with max_steps 8 would train nothing and end past 8."""
    engine, bob, job_id = paused
    (engine.workspace.job_paths(job_id).root / "checkpoint-10").mkdir(parents=True)
    with pytest.raises(ConfigError, match="max_steps 8 is before checkpoint-10: set max_steps to "
                                          "at least 10, or resume from an earlier checkpoint"):
        engine.jobs.resume(bob, job_id, changes={"max_steps": 8})
    assert engine.views.get_job(bob, job_id)["status"] == JobStatus.PAUSED  # nothing changed
    engine.jobs.resume(bob, job_id, changes={"max_steps": 10})  # ends where it is: allowed
    assert engine.views.get_job(bob, job_id)["config"]["max_steps"] == 10


def test_priority_share_and_delete_follow_the_rules(paused, team):
    engine, bob, job_id = paused
    carol = team.get("carol")
    assert engine.jobs.set_priority(bob, job_id, "7")["priority"] == 7
    assert engine.views.get_job(bob, job_id)["config"]["priority"] == 7
    with pytest.raises(ConfigError, match="priority must be <= 1000"):
        engine.jobs.set_priority(bob, job_id, 10**30)
    with pytest.raises(ConfigError, match="shared must be true or false"):
        engine.jobs.share(bob, job_id, "yes")
    assert engine.jobs.share(bob, job_id, True)["shared"] is True
    queued = engine.jobs.submit(bob, {"max_steps": 5})["job_id"]
    with pytest.raises(ConfigError, match="cancel it before deleting it"):
        engine.jobs.delete(bob, queued)
    with pytest.raises(PermissionError, match="not your job"):
        engine.jobs.delete(carol, job_id)
    folder = engine.workspace.job_paths(job_id).root
    assert folder.is_dir()
    assert engine.jobs.delete(bob, job_id) == {"job_id": job_id, "deleted": True}
    assert not folder.exists() and job_id not in {j["job_id"] for j in engine.views.list_jobs(bob)}
    with pytest.raises(IllegalTransition):
        engine.jobs.resume(bob, queued)  # a queued job is not resumable


def test_a_log_is_shown_to_its_owner_and_admins_only(idle_engine, team):
    bob, carol, alice = team.get("bob"), team.get("carol"), team.get("alice")
    job_id = idle_engine.jobs.submit(bob, {"max_steps": 1})["job_id"]
    idle_engine.workspace.job_paths(job_id).log.write_text("step 1 loss 5.0 at /secret/path\n")
    assert "/secret/path" in idle_engine.views.log_tail(bob, job_id)
    assert "/secret/path" in idle_engine.views.log_tail(alice, job_id)
    hidden = idle_engine.views.log_tail(carol, job_id)
    assert "/secret/path" not in hidden and "visible to its owner and admins" in hidden


def test_a_submit_writes_the_job_folder_with_the_store_lock_free(idle_engine, team, monkeypatch):
    """Every other user's call waits for the store lock: a slow disk under a submit or a sweep
    must not hold it."""
    bob, free = team.get("bob"), []
    write = submission.write_job_file

    def noting(*args, **kwargs):
        free.append(lock_is_free(idle_engine.store.lock))
        return write(*args, **kwargs)
    monkeypatch.setattr(submission, "write_job_file", noting)
    idle_engine.jobs.submit(bob, {"max_steps": 5})
    idle_engine.sweeps.submit(team.get("alice"), {"grid": {"lora_r": [4, 8]}})
    assert free == [True, True, True]


def test_a_sweep_whose_second_job_cannot_be_stored_queues_none(idle_engine, team, monkeypatch):
    """"Nothing was queued" holds when the disk fills between two runs of a sweep."""
    add, calls = idle_engine.store.add, []

    def filling(job):
        calls.append(job.job_id)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return add(job)
    monkeypatch.setattr(idle_engine.store, "add", filling)
    with pytest.raises(StorageError, match="nothing was queued"):
        idle_engine.sweeps.submit(team.get("alice"), {"grid": {"lora_r": [4, 8]}})
    assert idle_engine.store.all() == []
    assert list(idle_engine.workspace.job_paths("any").root.parent.glob("*")) == []
