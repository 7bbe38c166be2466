"""Logins, roles and quotas: the users file, and the engine's checks (no training needed)."""

import io
import os
import sys

import pytest
import yaml
from conftest import StandInSupervisor

from engine.config import ConfigError, JobConfig
from engine.console.people.users import (
    LOCAL_USER,
    NotYourJob,
    QuotaExceeded,
    Users,
    add_user,
    hash_password,
    verify_password,
)
from engine.console.records.job import JobStatus
from engine.console.scheduling.scheduler import DevicePool, Scheduler


def test_passwords_are_salted_hashes():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # salted
    assert "correct horse" not in first
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("wrong horse", first)
    assert not verify_password("correct horse", "plain-text")


def test_add_user_writes_only_hashes_and_keeps_others(tmp_path):
    path = tmp_path / "users.yaml"
    add_user(path, "alice", "alice-secret", "admin")
    add_user(path, "bob", "bob-secret-1", "user", {"max_gpus": 1})
    add_user(path, "bob", "bob-secret-2", "user")  # a password change keeps bob's quotas
    text = path.read_text()
    assert "alice-secret" not in text and "bob-secret" not in text
    users = Users.from_file(path)
    assert users.authenticate("alice", "alice-secret")
    assert users.authenticate("bob", "bob-secret-2")
    assert not users.authenticate("bob", "bob-secret-1")
    assert not users.authenticate("carol", "anything")
    assert users.get("alice").is_admin and not users.get("bob").is_admin
    assert users.get("bob").quotas["max_gpus"] == 1
    assert users.get("alice").quotas["max_queued_jobs"] == 20  # the defaults section
    assert path.stat().st_mode & 0o077 == 0


def test_add_user_command_reads_password_from_stdin(tmp_path, monkeypatch, capsys):
    """`python app.py add-user`, run in this process (app.main is what the command runs)."""
    import app

    path = tmp_path / "users.yaml"
    monkeypatch.setattr(sys, "stdin", io.StringIO("dana-password\n"))
    assert app.main(["add-user", "dana", "--role", "admin", "--file", str(path),
                     "--password-stdin", "--quota", "max_running_jobs=3"]) == 0, \
        capsys.readouterr().err
    users = Users.from_file(path)
    assert users.authenticate("dana", "dana-password")
    assert users.get("dana").quotas["max_running_jobs"] == 3
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert app.main(["add-user", "eve", "--file", str(path), "--password-stdin"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert not Users.from_file(path).authenticate("eve", "short")  # refused: nothing saved


@pytest.mark.parametrize("content, message", [
    ({"users": {"x": {"password": "hunter22"}}}, "users.x.password: not a scrypt hash"),
    ({"users": {"x": {"password": hash_password("p" * 8), "role": "root"}}},
     "users.x.role: must be one of admin, user, got 'root'"),
    ({"defaults": {"max_job": 3}}, "defaults.max_job: unknown quota; allowed: max_jobs"),
    ({"users": {"x": {"password": hash_password("p" * 8), "quotas": {"max_gpus": -1}}}},
     "users.x.quotas.max_gpus: must be a whole number >= 0"),
    # A misspelt section would silently leave the user without the quotas it sets.
    ({"users": {"x": {"password": hash_password("p" * 8), "quota": {"max_gpus": 1}}}},
     "users.x.quota: unknown field; allowed: role, password, quotas"),
    ({"users": {"x": {"password": hash_password("p" * 8), "quotas": {"max_gpus": True}}}},
     "users.x.quotas.max_gpus: must be a whole number >= 0 or null .unlimited., got True"),
    ({"users": {"x": {"role": "user"}}}, "users.x.password: is required: a scrypt hash"),
    ({"users": {"x": "hunter22"}}, "users.x: must be a mapping of name: value"),
    ({"users": {"x": {"password": hash_password("p" * 8)}}, "default": {}},
     "default: unknown field; allowed: defaults, users"),
])
def test_bad_users_file_names_the_problem(tmp_path, content, message):
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        Users.from_file(path)


def test_a_refused_users_file_is_never_echoing_a_plain_password(tmp_path):
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump({"users": {"x": {"password": "hunter22"}}}))
    with pytest.raises(ConfigError) as refused:
        Users.from_file(path)
    assert "not a scrypt hash" in str(refused.value) and "hunter22" not in str(refused.value)


def test_add_user_refuses_an_unknown_quota_and_changes_nothing(tmp_path):
    path = tmp_path / "users.yaml"
    add_user(path, "bob", "bob-secret-1", "user", {"max_gpus": 1})
    before = path.read_text()
    with pytest.raises(ConfigError, match="quotas: max_gpu: unknown quota; allowed: max_jobs"):
        add_user(path, "bob", "bob-secret-2", "user", {"max_gpu": 2})
    assert path.read_text() == before


def test_without_logins_everyone_is_the_local_admin():
    users = Users()
    assert not users.enabled
    assert users.get(None) == LOCAL_USER and users.get("anyone") == LOCAL_USER
    assert all(v is None for v in users.quotas_of("local").values())


def test_engine_enforces_owners_and_quotas(idle_engine, team):
    engine = idle_engine
    alice, bob, carol = team.get("alice"), team.get("bob"), team.get("carol")
    job = engine.jobs.submit(bob, {"max_steps": 5})["job_id"]
    assert engine.views.get_job(alice, job)["owner"] == "bob"
    for action in (lambda u: engine.jobs.pause(u, job), lambda u: engine.jobs.cancel(u, job),
                   lambda u: engine.jobs.set_priority(u, job, 5),
                   lambda u: engine.artifacts.download_logs(u, job)):
        with pytest.raises(NotYourJob, match=f"not your job: {job} belongs to bob"):
            action(carol)
    assert engine.views.get_job(alice, job)["status"] == JobStatus.QUEUED  # nothing changed
    assert engine.jobs.set_priority(bob, job, 3)["priority"] == 3
    assert engine.jobs.pause(alice, job)["status"] == JobStatus.PAUSED  # an admin may
    engine.jobs.resume(bob, job)

    with pytest.raises(QuotaExceeded, match="quota max_steps: bob may use at most 50; the job asks "
                                            "for max_steps 500"):
        engine.jobs.submit(bob, {"max_steps": 500})
    with pytest.raises(QuotaExceeded, match="quota max_gpus: bob may use at most 2"):
        engine.jobs.submit(bob, {"max_steps": 5, "gpus": 3})
    with pytest.raises(ConfigError, match="preempt: only admins"):
        engine.jobs.submit(bob, {"max_steps": 5, "preempt": True})
    engine.jobs.submit(bob, {"max_steps": 5})
    count = len(engine.views.list_jobs(alice))
    with pytest.raises(QuotaExceeded, match="quota max_queued_jobs: bob has 2 jobs queued "
                                            r"\(quota 2\)"):
        engine.jobs.submit(bob, {"max_steps": 5})
    assert len(engine.views.list_jobs(alice)) == count  # a refused submit creates nothing
    engine.jobs.submit(carol, {"max_steps": 5})  # carol's own quota is untouched

    # An admin's preempting job keeps its owner's rights when resumed with changes.
    urgent = engine.jobs.submit(alice, {"max_steps": 5, "preempt": True})["job_id"]
    engine.jobs.pause(alice, urgent)
    assert engine.jobs.resume(alice, urgent, changes={"max_steps": 6})["status"] == "queued"


def test_scheduler_holds_jobs_over_a_running_quota(tmp_path):
    from engine.console.records.job import Job
    from engine.console.records.store import MemoryJobStore

    store = MemoryJobStore()
    quotas = {"bob": {"max_running_jobs": 1, "max_gpus": None}, "carol": {}}
    workspace = type("W", (), {"job_paths": lambda s, j: None})()
    scheduler = Scheduler(store, StandInSupervisor(), workspace, DevicePool([0, 1, 2, 3]),
                          quotas_of=lambda owner: quotas[owner])
    for seq, owner in enumerate(["bob", "bob", "carol"], start=1):
        store.add(Job(job_id=f"j{seq}", name=f"j{seq}", config=JobConfig(gpus=1), owner=owner,
                      seq=seq))
    scheduler.step(now=1.0)
    status = {j.job_id: j.status for j in store.all()}
    assert status == {"j1": "running", "j2": "queued", "j3": "running"}
    assert scheduler.waiting["j2"] == "quota max_running_jobs: bob has 1 running (quota 1)"


def test_add_user_never_writes_the_hashes_readable_to_others(tmp_path, monkeypatch):
    modes = []
    real_replace = os.replace

    def spy(source, destination):
        modes.append(os.stat(source).st_mode & 0o777)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    add_user(tmp_path / "users.yaml", "zed", "zed-secret", "user")
    assert modes == [0o600]
