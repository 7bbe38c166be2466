"""Odd arguments never reach the inside.

Every public endpoint of a real console (read from its Blocks, so a new one is covered without
editing this file) is called with generated odd JSON: wrong types, huge numbers, NaN, nesting,
control characters, real ids in the wrong places. Each call answers or is refused with a gr.Error
that is not an internal error, and no stored job changes unless an endpoint that exists to change
jobs accepted the call. Every config field, given odd values, is accepted or refused by check and
submit with a ConfigError that names it.

Unit tier: an engine that schedules nothing, and no process may start (a call that gets as far as
starting one was accepted). A fixed seed by default; TRAINDECK_FUZZ_EXAMPLES=5000 soaks.
"""

from __future__ import annotations

import inspect
import os
import subprocess
from contextlib import contextmanager

import gradio as gr
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.config import SCHEMA, ConfigError, JobConfig
from engine.console.engine import Engine
from engine.console.people.users import Users, add_user
from engine.console.records.job import Job, JobStatus
from engine.console.records.store import MemoryJobStore
from engine.sources import TINY_MODEL, sample_dataset
from ui.app import build_console

SOAK = int(os.environ.get("TRAINDECK_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    """A fixed seed and `examples` calls (the unit tier's 30 s), or a random soak."""
    return settings(max_examples=SOAK or examples, derandomize=not SOAK, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck))


# Endpoints whose purpose is to change jobs: an accepted call may; a refused one may not.
CHANGE_JOBS = {"submit_job", "pause_job", "resume_job", "cancel_job", "set_priority", "share_job",
               "delete_job", "submit_sweep", "cancel_sweep"}
SWEEP_ID = "sweep-20260101-000000-abcd"
CHECKPOINT = "checkpoint-4"


class ProcessStart(BaseException):
    """Raised where a process would start: not an Exception, so no handler takes it for an
    error of the call's."""


# ---- a console with a job in every status --------------------------------------------------------


def seed_jobs(engine: Engine, owners: tuple[str, ...]) -> None:
    """A job in each status for each owner; the completed ones have a checkpoint, a final model
    and metrics, and one is a sweep's run."""
    config = JobConfig(model=str(TINY_MODEL), dataset=str(sample_dataset("messages")),
                       adapter="lora", max_steps=8)
    for owner in owners:
        for number, status in enumerate(JobStatus):
            job_id = f"{owner}-{status.value}"
            engine.store.add(Job(job_id=job_id, name=job_id, config=config, owner=owner,
                                 status=status.value, seq=engine.store.next_seq(),
                                 last_checkpoint=CHECKPOINT, shared=number % 2 == 0,
                                 sweep={"id": SWEEP_ID, "name": "lr", "values": {}}
                                 if status == JobStatus.COMPLETED else None))
            write_job_folder(engine, job_id)


def write_job_folder(engine: Engine, job_id: str) -> None:
    paths = engine.workspace.job_paths(job_id)
    for folder in (paths.root / CHECKPOINT, paths.final_model):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text('{"model_type": "llama"}')
    paths.metrics.write_text('{"step": 1, "time": 1.0, "loss": 2.5}\n'
                             '{"step": 4, "time": 2.0, "loss": 2.0}\n')
    paths.log.write_text("step 4\n")


def stored(engine: Engine) -> list[dict]:
    return sorted((job.to_dict() for job in engine.store.all()), key=lambda job: job["job_id"])


def restore(engine: Engine, jobs: list[dict]) -> None:
    for job in engine.store.all():
        engine.store.delete(job.job_id)
    for job in jobs:
        engine.store.add(Job.from_dict(dict(job)))
        write_job_folder(engine, job["job_id"])


def refuse_process(*args, **kwargs):
    raise ProcessStart(f"a process would start: {args[0] if args else kwargs}")


class Console:
    def __init__(self, engine: Engine, blocks: gr.Blocks, user: str | None):
        self.engine, self.blocks, self.user = engine, blocks, user
        self.seeded = stored(engine)

    def endpoints(self) -> dict:
        return {fn.api_name: fn.fn for fn in self.blocks.fns.values()
                if fn.fn is not None and fn.api_visibility != "private"}

    def request(self) -> gr.Request:
        return gr.Request(username=self.user)


@contextmanager
def console_of(workspace, users: Users, user: str | None):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", refuse_process)
        engine = Engine(workspace, store=MemoryJobStore(), users=users).open()
        try:
            seed_jobs(engine, ("bob", "carol") if user else ("local",))
            yield Console(engine, build_console(engine), user)
        finally:
            engine.close()


@pytest.fixture(scope="module", params=["no logins", "plain user"])
def console(request, tmp_path_factory):
    """A console without logins (the caller is the local admin), or one where bob, a plain user,
    calls; either way with a job in every status, bob's and another user's."""
    folder = tmp_path_factory.mktemp("fuzz")
    users, user = Users(), None
    if request.param == "plain user":
        add_user(folder / "users.yaml", "bob", "bob-secret", "user")
        add_user(folder / "users.yaml", "carol", "carol-secret", "user")
        users, user = Users.from_file(folder / "users.yaml"), "bob"
    with console_of(folder / "workspace", users, user) as console:
        yield console


# ---- odd JSON ------------------------------------------------------------------------------------

FIELDS = sorted(SCHEMA)
# 10**4000: near the longest integer JSON can carry (Python parses at most 4300 digits).
NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**4000, 1e308, -1e308, 5e-324,
           -0.0, float("inf"), float("-inf"), float("nan")]
TEXTS = ["", " ", "\x00", "a\nb", "\u202e", "\ud800", "\x7f", "..", "../../etc/passwd",
         "/etc/passwd", "x" * 5000, "null", "true", "auto", "-1", "1e309", "checkpoint-0",
         "checkpoint-99999999999999999999999", "checkpoint-4/../..", "ünïcødé", "💥"]
REAL = ["bob-queued", "bob-running", "bob-paused", "bob-completed", "bob-failed",
        "bob-cancelled", "carol-completed", "carol-running", "local-completed", "local-paused",
        "local-failed", CHECKPOINT, SWEEP_ID, "basic-fine-tune", "efficient-qlora", "bob", "carol",
        "local", "admin", "completed", "paused", "lora", "q8_0", "f32", "sft", "dpo"]


def nested(depth: int):
    value: object = "deep"
    for _ in range(depth):
        value = [value] if depth % 2 else {"base": value}
    return value


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.sampled_from(REAL),
                    st.sampled_from(FIELDS))
KEYS = st.one_of(st.sampled_from(FIELDS + ["base", "grid", "random", "trials", "preset"]),
                 st.text(max_size=10))
ODD_JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)
CONFIGS = st.dictionaries(st.sampled_from(FIELDS), ODD_JSON, max_size=4)
SWEEPS = st.fixed_dictionaries({"base": CONFIGS}, optional={
    "grid": st.dictionaries(st.sampled_from(FIELDS), st.lists(ODD_JSON, max_size=3), max_size=2),
    "random": st.dictionaries(st.sampled_from(FIELDS), ODD_JSON, max_size=2),
    "trials": ODD_JSON, "seed": ODD_JSON, "name": ODD_JSON, "priority": ODD_JSON})
ARGUMENTS = st.one_of(ODD_JSON, st.sampled_from(REAL), CONFIGS, SWEEPS,
                      st.sampled_from([nested(200), nested(201)]))


def draw_arguments(data, fn) -> dict:
    """Odd values for every argument a client sends (an optional one is sometimes left out)."""
    arguments = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.annotation is gr.Request:
            continue
        if parameter.default is not inspect.Parameter.empty and data.draw(st.booleans()):
            continue
        arguments[name] = data.draw(ARGUMENTS, label=name)
    return arguments


# ---- the properties ------------------------------------------------------------------------------


def outcome(console: Console, name: str, fn, arguments: dict) -> str:
    """Call as Gradio would; "accepted", "process" (got as far as starting one) or "refused".
    An internal error, or any other exception, fails the test."""
    if "request" in inspect.signature(fn).parameters:
        arguments = {**arguments, "request": console.request()}
    try:
        result = fn(**arguments)
        orjson.dumps(result)  # Gradio's encoder: what it cannot send, the client never gets
        return "accepted"
    except ProcessStart:
        return "process"
    except gr.Error as exc:
        message = str(exc.message)
        assert "internal error" not in message, f"/{name}: {message}"
        assert len(message) < 3000, f"/{name} echoed {len(message)} characters"
        orjson.dumps(message)
        return "refused"


def test_the_fuzz_reaches_every_endpoint_of_the_contract(console):
    names = set(console.endpoints())
    assert {"health", "get_preset", "submit_job", "resume_job", "try_model", "submit_sweep",
            "download_model", "export_gguf", "upload_dataset"} <= names
    assert len(names) >= 27


def test_real_ids_in_their_places_get_through_and_no_process_starts(console):
    """The harness can tell: a plain read is accepted, a refusal is seen, and a generation
    stops where its process would start."""
    endpoints, job_id = console.endpoints(), f"{console.user or 'local'}-completed"
    assert outcome(console, "get_job", endpoints["get_job"], {"job_id": job_id}) == "accepted"
    assert outcome(console, "get_job", endpoints["get_job"], {"job_id": [job_id]}) == "refused"
    assert outcome(console, "try_model", endpoints["try_model"],
                   {"job_id": job_id, "prompt": "Hello", "checkpoint": CHECKPOINT}) == "process"
    assert stored(console.engine) == console.seeded


@fuzz(120)
@given(data=st.data())
def test_odd_arguments_are_refused_clearly_and_change_nothing(console, data):
    endpoints = console.endpoints()
    name = data.draw(st.sampled_from(sorted(endpoints)), label="endpoint")
    arguments = draw_arguments(data, endpoints[name])
    before = stored(console.engine)
    result = outcome(console, name, endpoints[name], arguments)
    after = stored(console.engine)
    if after == before:
        return
    assert result != "refused", f"/{name} refused the call but changed stored jobs"
    assert name in CHANGE_JOBS, f"/{name} changed stored jobs"
    restore(console.engine, console.seeded)


def caller(console: Console):
    return console.engine.users.get(console.user)


@fuzz(100)
@given(field=st.sampled_from(FIELDS), value=st.one_of(SCALARS, ODD_JSON))
@example(field="preset", value=[None])  # was a TypeError inside
@example(field="dataset", value="\ud800")  # was a UnicodeEncodeError inside
@example(field="name", value="a\ud800")  # was stored, and broke every job list
def test_every_config_field_refuses_odd_values_by_name(console, field, value):
    """Refused by check and by submit, naming the field; or accepted as a config every client
    can be sent (a stored job with a lone surrogate would break every job list)."""
    engine, user = console.engine, caller(console)
    try:
        orjson.dumps(engine.jobs.check(user, {field: value}).config.to_dict())
    except ConfigError as exc:
        assert any(field in problem for problem in exc.problems), (field, value, exc.problems)
        before = stored(engine)
        with pytest.raises(ConfigError):
            engine.jobs.submit(user, {field: value})
        assert stored(engine) == before
    except ProcessStart:
        pass


@fuzz(60)
@given(route=st.sampled_from(["resume", "sweep"]), field=st.sampled_from(FIELDS),
       value=st.one_of(SCALARS, ODD_JSON))
def test_odd_values_in_resume_changes_and_sweeps_are_refused_by_name(console, route, field,
                                                                      value):
    engine, user = console.engine, caller(console)
    try:
        if route == "resume":
            engine.jobs.resume(user, f"{console.user or 'local'}-paused", None, {field: value},
                               True)
        else:
            engine.sweeps.submit(user, {"base": {}, "grid": {field: [value]}})
    except ConfigError as exc:
        assert any(field in problem for problem in exc.problems), (field, value, exc.problems)
        assert stored(engine) == console.seeded
        return
    except ProcessStart:
        pass
    restore(engine, console.seeded)
