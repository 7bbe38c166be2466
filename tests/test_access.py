"""Who may do what, without a console: where each user's models and datasets may come from,
quotas, what of another user's job a person is shown, and that every call names who makes it."""

import inspect
import os

import pytest

from engine.config import ConfigError, JobConfig
from engine.console.engine import Engine
from engine.console.jobs.control import JobControl
from engine.console.jobs.submission import Enqueuer
from engine.console.jobs.sweeps import Sweeps
from engine.console.jobs.views import JobViews
from engine.console.people.access import Access
from engine.console.people.users import LOCAL_USER, NotYourJob, QuotaExceeded, User, Users
from engine.console.records.job import Job, JobStatus
from engine.console.results.artifacts import Artifacts
from engine.sources import TINY_MODEL, resolve_dataset_location, resolve_model, sample_dataset

ALICE, BOB, CAROL = User("alice", "admin"), User("bob", "user"), User("carol", "user")
# Public methods of the engine and its collaborators that no person calls, each with why it needs
# no caller. Every other public method is an entry point and takes the acting user first.
NOT_ENTRY_POINTS = {
    "Engine.open": "life cycle", "Engine.start": "life cycle", "Engine.close": "life cycle",
    "Engine.recover": "life cycle: re-attaches to trainers after a restart",
    "Engine.health": "console-wide counts every visitor sees, nothing of one job",
    "Engine.system_stats": "console-wide telemetry every visitor sees",
    "Engine.disk_status": "the workspace's disk, part of the console-wide health",
    "Engine.list_presets": "the shipped templates", "Engine.get_preset": "one shipped template",
    "JobControl.keep_record": "a status listener: copies a job's record into its folder",
    "JobViews.position": "a queue position, inside submit and re-prioritise",
    "JobViews.summary": "a job's row before Access shapes it for the caller",
    "JobViews.progress": "live progress, inside the views and notifications",
    "JobViews.metrics": "the parsed metrics log, inside the views, sweeps and notifications",
    "JobViews.as_ended": "a job as it will be recorded, inside the views",
    "Artifacts.clean_uploads": "housekeeping the console does on its own",
}


@pytest.fixture
def place(tmp_path):
    """A workspace with uploads and jobs of several users, a data root, and files elsewhere."""
    workspace, root, outside = tmp_path / "ws", tmp_path / "team-data", tmp_path / "elsewhere"
    for folder in (workspace / "uploads" / "bob", workspace / "uploads" / "carol", root, outside,
                   workspace / "jobs" / "bobs-job" / "model", workspace / "jobs" / "alices-job"
                   / "model", workspace / "jobs" / "shared-job" / "model"):
        folder.mkdir(parents=True)
    for folder in workspace.rglob("model"):
        (folder / "config.json").write_text("{}")
    for path in (workspace / "uploads" / "bob" / "mine.jsonl", workspace / "uploads" / "carol"
                 / "hers.jsonl", root / "team.jsonl", outside / "secret.jsonl"):
        path.write_text('{"text": "x"}\n')
    os.symlink(outside / "secret.jsonl", root / "escape.jsonl")  # a link out of a data root
    jobs = {"bobs-job": Job(job_id="bobs-job", name="b", config=JobConfig(), owner="bob"),
            "alices-job": Job(job_id="alices-job", name="a", config=JobConfig(), owner="alice"),
            "shared-job": Job(job_id="shared-job", name="s", config=JobConfig(), owner="alice",
                              shared=True)}
    users = Users()
    users.add_logins([("alice", "pw-alice", "admin"), ("bob", "pw-bob", "user"),
                      ("carol", "pw-carol", "user")])
    access = Access(users, workspace, workspace / "uploads", (root,), jobs.get)
    return access, workspace, root, outside


def allowed(access, user, path) -> bool:
    rules = access.source_rules(user)
    return rules.allows(rules.candidate(str(path), path.parent))


def test_each_user_reads_their_uploads_the_roots_and_jobs_they_may_use(place):
    access, workspace, root, outside = place
    uploads, jobs = workspace / "uploads", workspace / "jobs"
    assert allowed(access, BOB, uploads / "bob" / "mine.jsonl")
    assert not allowed(access, BOB, uploads / "carol" / "hers.jsonl")
    assert allowed(access, ALICE, uploads / "carol" / "hers.jsonl")  # an admin reads every upload
    assert allowed(access, CAROL, root / "team.jsonl")
    assert allowed(access, CAROL, sample_dataset("text")) and allowed(access, CAROL, TINY_MODEL)
    assert not allowed(access, CAROL, outside / "secret.jsonl")
    assert not allowed(access, CAROL, root / "escape.jsonl")  # links are followed first
    assert allowed(access, BOB, jobs / "bobs-job" / "model")
    assert not allowed(access, BOB, jobs / "alices-job" / "model")
    assert allowed(access, BOB, jobs / "shared-job" / "model")
    assert allowed(access, ALICE, jobs / "bobs-job" / "model")
    assert not allowed(access, ALICE, workspace / "jobs.json")  # the workspace's own files


def test_a_data_root_that_holds_the_workspace_opens_nothing_inside_it(tmp_path):
    workspace = tmp_path / "ws"
    (workspace / "jobs" / "alices-job").mkdir(parents=True)
    users = Users()
    users.add_logins([("bob", "pw-bob", "user")])
    access = Access(users, workspace, workspace / "uploads", (tmp_path,), lambda job_id: None)
    assert allowed(access, BOB, tmp_path / "anything.jsonl")
    assert not allowed(access, BOB, workspace / "jobs" / "alices-job" / "model")


def test_a_refusal_reads_the_same_whether_the_path_exists_or_not(place):
    access, workspace, root, outside = place
    rules = access.source_rules(CAROL)
    messages = set()
    for path in (outside / "secret.jsonl", outside / "missing.jsonl", "/etc/passwd", "~/.ssh/id",
                 "../../../../etc/hostname"):
        with pytest.raises(ConfigError) as error:
            resolve_dataset_location(str(path), outside, rules)
        messages.add(str(error.value).replace(str(path), "<path>"))
        with pytest.raises(ConfigError, match="not a place this console reads from"):
            resolve_model(str(path), outside, rules)
    assert len(messages) == 1


def test_without_logins_or_roots_every_local_path_is_open(tmp_path):
    access = Access(Users(), tmp_path / "ws", tmp_path / "ws" / "uploads")
    elsewhere = tmp_path / "data.jsonl"
    elsewhere.write_text('{"text": "x"}\n')
    assert not access.confined
    assert resolve_dataset_location(str(elsewhere), tmp_path, access.source_rules(LOCAL_USER)) == (
        str(elsewhere), True)


def test_quotas_name_the_limit_and_the_usage(place):
    access = place[0]
    small = User("bob", "user", {"max_gpus": 1, "max_steps": 50, "max_epochs": 2,
                                 "max_queued_jobs": 1, "max_jobs": 2})
    with pytest.raises(QuotaExceeded) as error:
        access.check_job_size(JobConfig(gpus=2, max_steps=80, preempt=True), small, 4, str)
    assert str(error.value).splitlines() == [
        "preempt: only admins may pause other jobs to make room; bob is a user",
        "quota max_gpus: bob may use at most 1; the job asks for GPUs 2",
        "quota max_steps: bob may use at most 50; the job asks for max_steps 80"]
    with pytest.raises(QuotaExceeded, match="num_train_epochs 3"):
        access.check_job_size(JobConfig(num_train_epochs=3), small, 4, str)
    with pytest.raises(QuotaExceeded, match="gpus: this machine has 1 GPU"):
        access.check_job_size(JobConfig(gpus=2), ALICE, 1, lambda: "1 GPU (0)")
    held = [Job(job_id=f"j{n}", name="j", config=JobConfig(), owner="bob", status=status)
            for n, status in enumerate((JobStatus.PAUSED.value, JobStatus.QUEUED.value))]
    with pytest.raises(QuotaExceeded, match="bob has 1 jobs queued"):
        access.check_queue_quota(small, held)
    with pytest.raises(QuotaExceeded, match="bob holds 2 jobs \\(quota 2\\)"):
        access.check_job_count(small, held)  # the paused one counts too
    access.check_job_count(User("carol", "user", {"max_jobs": 2}), held)  # bob's are not carol's


def test_only_owners_and_admins_act_and_sharing_opens_trying(place):
    access = place[0]
    bobs = Job(job_id="b1", name="b", config=JobConfig(), owner="bob")
    access.authorize(bobs, BOB, "cancel")
    access.authorize(bobs, ALICE, "cancel")
    with pytest.raises(NotYourJob, match="not your job: b1 belongs to bob"):
        access.authorize(bobs, CAROL, "cancel")
    with pytest.raises(NotYourJob, match="or anyone once bob shares it"):
        access.authorize_use(bobs, CAROL, "try")
    bobs.shared = True
    access.authorize_use(bobs, CAROL, "try")
    with pytest.raises(NotYourJob):
        access.authorize(bobs, CAROL, "delete")  # sharing lends the model, not the job


def test_others_see_the_row_but_not_paths_logs_or_errors(place):
    access = place[0]
    summary = {"job_id": "b1", "owner": "bob", "status": "failed", "model": "/models/base",
               "dataset": "/ws/uploads/bob/abc-mine.jsonl", "error": "dataset /ws/x: line 3"}
    shown = access.summary_for(summary, CAROL)
    assert shown["model"] == "base" and shown["dataset"] == "abc-mine.jsonl"
    assert shown["error"] == "failed: details are visible to its owner and admins"
    assert access.summary_for(summary, BOB) == summary == access.summary_for(summary, ALICE)
    job = {**summary, "config": {"model": "org/hub-model", "dataset": "/data/d.jsonl"},
           "job_dir": "/ws/jobs/b1", "command": "python -m engine.train /ws/jobs/b1/job.yaml",
           "attempts": [{"attempt": 1, "error": "boom at /ws/jobs/b1"}]}
    shown = access.job_for(job, CAROL)
    assert shown["config"] == {"model": "org/hub-model", "dataset": "d.jsonl"}
    assert shown["job_dir"] is None and shown["command"] is None
    assert "error" not in shown["attempts"][0]


def public_methods():
    for cls in (Engine, JobControl, Enqueuer, JobViews, Artifacts, Sweeps):
        for name, method in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                yield f"{cls.__name__}.{name}", method


def test_every_entry_point_takes_the_acting_user_first_with_no_default():
    methods = dict(public_methods())
    assert set(NOT_ENTRY_POINTS) <= set(methods), "an exemption names a method that is gone"
    forgetful = []
    for qualified, method in methods.items():
        if qualified in NOT_ENTRY_POINTS:
            continue
        parameters = list(inspect.signature(method, eval_str=True).parameters.values())[1:]
        first = parameters[0] if parameters else None
        if first is None or (first.name, first.annotation, first.default) != \
                ("user", User, inspect.Parameter.empty):
            forgetful.append(f"{qualified}{inspect.signature(method)}")
    assert forgetful == [], "entry points that do not take the acting user first, required:\n" + \
        "\n".join(forgetful)
    required_user = (User, inspect.Parameter.empty)
    for name, method in inspect.getmembers(Access, inspect.isfunction):
        for parameter in inspect.signature(method, eval_str=True).parameters.values():
            if parameter.name == "user":  # Access decides from a role, never from a missing user
                assert (parameter.annotation, parameter.default) == required_user, f"Access.{name}"


def test_without_logins_the_local_admin_acts_and_with_logins_a_user_has_a_users_rights(
        tmp_path, idle_engine):
    alone = Engine(tmp_path / "alone").open()
    try:
        me = alone.users.get(None)  # what a request without a login name is, with no logins
        assert me == LOCAL_USER and me.is_admin
        job_id = alone.jobs.submit(me, {"max_steps": 5})["job_id"]
        assert alone.views.get_job(me, job_id)["job_dir"]  # all of it
        assert alone.jobs.cancel(me, job_id)["status"] == JobStatus.CANCELLED
    finally:
        alone.close()

    shared = idle_engine  # alice the admin, bob and carol plain users
    with pytest.raises(NotYourJob, match="unknown user None"):
        shared.users.get(None)  # with logins, a request without a login name is no one
    bob, carol = shared.users.get("bob"), shared.users.get("carol")
    job_id = shared.jobs.submit(bob, {"max_steps": 5})["job_id"]
    with pytest.raises(NotYourJob, match="belongs to bob"):
        shared.jobs.cancel(carol, job_id)
    assert shared.views.get_job(carol, job_id)["job_dir"] is None
    assert "visible to its owner and admins" in shared.views.log_tail(carol, job_id)
    # A code path that forgets the caller fails; it never acts with an admin's rights.
    with pytest.raises(TypeError):
        shared.jobs.cancel(job_id)
    with pytest.raises(TypeError):
        shared.views.get_job(job_id)
    assert shared.views.get_job(bob, job_id)["status"] == JobStatus.QUEUED  # nothing changed
    assert shared.jobs.cancel(bob, job_id)["status"] == JobStatus.CANCELLED
