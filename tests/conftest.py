"""Shared fixtures and helpers.

Unit tier (`make test-fast`): an in-memory store, a stand-in supervisor and a scheduler stepped by
hand on an injected clock (`stepped`), and an engine that is open but schedules nothing
(`idle_engine`). Everything else (marked slow or browser) runs real trainers, real consoles and a
real browser; its waits have deadlines and say what they waited for.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from harness import outliving, wait_until

from engine.config import JobConfig
from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER, Users, add_user
from engine.console.records.job import Job, JobStatus
from engine.console.records.store import MemoryJobStore
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.spares import POOL
from engine.console.scheduling.scheduler import Scheduler

REPO = Path(__file__).resolve().parent.parent
SETTLED = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED}
# A short run of the tiny model with a rate high enough that its loss visibly falls.
QUICK = {"max_steps": 12, "learning_rate": 5e-3, "warmup_steps": 0}

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: fail fast, not slow
# The class itself: a test may replace the module's name `subprocess.Popen` with a stand-in.
POPEN = subprocess.Popen


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request, monkeypatch):
    """The unit tier starts no process: in a test not marked slow or browser, starting one (from
    the test or a thread it started) fails, naming the command. Threads that were already running
    (a shared engine of an earlier slow test) are not the test's doing and are left alone."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("browser"):
        yield
        return
    earlier = set(threading.enumerate()) - {threading.main_thread()}
    started = []
    execute_child = POPEN._execute_child
    # A test marked `tool(path)` may run that one program (the linter), and nothing else.
    tools = {str(marker.args[0]) for marker in request.node.iter_markers("tool")}

    def refuse(popen, args, *rest, **kwargs):
        if threading.current_thread() in earlier or (args and str(args[0]) in tools):
            return execute_child(popen, args, *rest, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            started.append(args)  # a thread may swallow the error: the test fails all the same
        raise AssertionError(f"a unit test started a process: {args!r} "
                             "(mark the test slow, or give it a stand-in)")

    monkeypatch.setattr(POPEN, "_execute_child", refuse)
    yield
    assert not started, f"a thread of a unit test started processes: {started!r}"


# pytest names the running test and phase in PYTEST_CURRENT_TEST; trainers inherit the test
# process's environment, and a spare trainer serves only the environment it imported under, so a
# value changing with each test would import a new spare for each. One value for the session.
STABLE_TEST_VAR = "tests/ (traindeck's test session)"


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    os.environ["PYTEST_CURRENT_TEST"] = STABLE_TEST_VAR
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    os.environ["PYTEST_CURRENT_TEST"] = STABLE_TEST_VAR
    return (yield)


# Seconds the heavy files took (--durations=0 on a 2-core machine, 2026-12-03; the rest took under
# 5 s each). xdist hands whole files out in collection order (make test: --no-loadscope-reorder):
# longest first, so that no long file starts last and runs alone while the other worker idles.
FILE_SECONDS = {
    "test_benches.py": 212, "test_buttons.py": 211, "test_slurm_recovery.py": 145,
    "test_slurm.py": 123, "test_teams.py": 109, "test_resilience.py": 107,
    "test_security.py": 88, "test_artifacts.py": 84, "test_browser.py": 61,
    "test_resume_ends.py": 53, "test_check_submit.py": 50, "test_disk_full.py": 47,
    "test_notify.py": 46, "test_api.py": 44, "test_training.py": 39, "test_warm_start.py": 37,
    "test_suite_hygiene.py": 31, "test_sweeps.py": 30, "test_levers.py": 23,
    "test_trackers.py": 18, "test_evaluation.py": 16, "test_store.py": 15, "test_fuzz_api.py": 10,
}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: files stay whole


OUTLIVED: list[str] = []  # what the last check found still running (and killed)


def pytest_sessionfinish(session):
    """Nothing a test started may outlive the suite: the controller (or a run without workers)
    looks, once every test is done, for processes still working in the session's temporary
    folder (a trainer nobody followed), kills them, and fails the run naming them."""
    if hasattr(session.config, "workerinput"):
        return  # a worker's spares end with it: their input closes
    POOL.end_all()  # this process's spares, which would end with it, a moment later
    OUTLIVED.extend(outliving(session.config._tmp_path_factory.getbasetemp()))
    if OUTLIVED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    """Say how many browser tests ran (a run where they were all skipped must not look green),
    and what outlived the tests."""
    for described in OUTLIVED:
        terminalreporter.write_line(f"OUTLIVED THE TESTS (killed): {described}", red=True)
    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if "browser" in getattr(report, "keywords", {}) and \
                    (report.when == "call" or outcome in ("skipped", "error")):
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        terminalreporter.write_line("browser tests: " + ", ".join(
            f"{n} {outcome}" for outcome, n in counts.items()))


def lock_is_free(lock) -> bool:
    """Whether another thread (an API call, say) can take `lock` now."""
    taken = threading.Event()

    def take():
        with lock:
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    return taken.wait(2.0)


def wait_for_status(engine: Engine, job_id: str, statuses=SETTLED, timeout: float = 180) -> dict:
    return wait_until(
        lambda: (job := engine.views.get_job(LOCAL_USER, job_id))["status"] in statuses and job,
        timeout, lambda: f"job {job_id} to become one of {sorted(statuses)} (still "
                         f"{engine.views.get_job(LOCAL_USER, job_id)['status']})")


def wait_for_step(engine: Engine, job_id: str, step: int = 1, timeout: float = 120) -> dict:
    def reached():
        job = engine.views.get_job(LOCAL_USER, job_id)
        assert job["status"] in (JobStatus.QUEUED, JobStatus.RUNNING), (job["status"], job["error"])
        return job["status"] == JobStatus.RUNNING and job["progress"]["step"] >= step and job

    return wait_until(reached, timeout, f"job {job_id} to reach step {step}", interval=0.1)


def processes_of(job_file: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(job_file) in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def losses(metrics: list[dict]) -> list[float]:
    return [m["loss"] for m in metrics if "loss" in m]


def open_engine(workspace: Path) -> Engine:
    engine = Engine(workspace)
    engine.start()
    engine.scheduler.tick_s = 0.1
    return engine


def shutdown(engine: Engine) -> None:
    engine.supervisor.kill_all()
    engine.close()


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(tmp_path / "workspace")
    yield engine
    shutdown(engine)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """One run of the default preset, untouched, shared by the tests that need a finished job."""
    engine = open_engine(tmp_path_factory.mktemp("shared") / "workspace")
    submitted = time.time()
    job_id = engine.jobs.submit(LOCAL_USER, {})["job_id"]
    job = wait_for_status(engine, job_id)
    wall_s = time.time() - submitted
    yield engine, job, wall_s
    shutdown(engine)


# ---- the unit tier ------------------------------------------------------------------------------


class StandInSupervisor:
    """Launches nothing: records what the scheduler asked for, and reports the exits a test
    queues in `exits`."""

    def __init__(self):
        self.running, self.launched, self.exits, self.stops = {}, [], [], []
        self.withdrawn = []

    def launch(self, job, paths, env=None):
        self.launched.append((job.job_id, env))
        trainer = type("Trainer", (), {"pid": 1000 + len(self.launched),
                                        "job_fields": lambda self: {}})()
        self.running[job.job_id] = trainer
        return trainer

    def start_delay(self, job, now):
        return None

    def request_stop(self, job_id, action, now=None):
        self.stops.append((job_id, action))

    def withdraw(self, job_id):
        self.running.pop(job_id, None)
        self.withdrawn.append(job_id)

    def poll(self, now=None):
        exits, self.exits = self.exits, []
        for finished in exits:
            self.running.pop(finished.job_id, None)
        return exits


class Stepped:
    """A scheduler over an in-memory store and a stand-in supervisor, stepped by hand."""

    def __init__(self, folder: Path, gpus=(), quotas=None, store=None):
        self.store = store if store is not None else MemoryJobStore()
        self.supervisor = StandInSupervisor()
        self.devices = DevicePool(list(gpus))
        self.scheduler = Scheduler(self.store, self.supervisor, Workspace(folder), self.devices,
                                   quotas_of=lambda owner: (quotas or {}).get(owner, {}))
        self.now = 1000.0

    def add(self, job_id: str, priority: int = 0, owner: str = "local", **config) -> None:
        self.store.add(Job(job_id=job_id, name=job_id, priority=priority, owner=owner,
                           seq=self.store.next_seq(), config=JobConfig(**config)))

    def step(self, seconds: float = 1.0) -> None:
        self.now += seconds
        self.scheduler.step(now=self.now)

    def started(self) -> list[str]:
        return [job_id for job_id, _ in self.supervisor.launched]


@pytest.fixture
def stepped(tmp_path) -> Stepped:
    return Stepped(tmp_path)


@pytest.fixture
def team(tmp_path) -> Users:
    """alice (admin), bob and carol (users; bob with small quotas)."""
    path = tmp_path / "users.yaml"
    add_user(path, "alice", "alice-secret", "admin")
    add_user(path, "bob", "bob-secret", "user", {"max_queued_jobs": 2, "max_steps": 50,
                                                  "max_gpus": 2})
    add_user(path, "carol", "carol-secret", "user")
    return Users.from_file(path)


@pytest.fixture
def local_engine(tmp_path):
    """An engine without logins (the caller is the local admin) whose scheduler does not run and
    which keeps no spare trainer: nothing it is asked starts a process."""
    engine = Engine(tmp_path / "workspace", warm_start=False).open()
    yield engine
    engine.close()


@pytest.fixture
def idle_engine(tmp_path, team):
    """An engine with logins whose scheduler does not run: jobs stay where the calls put them."""
    engine = Engine(tmp_path / "workspace", users=team).open()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def exact_session_engine(tmp_path_factory):
    engine = open_engine(tmp_path_factory.mktemp("exact") / "workspace")
    yield engine
    shutdown(engine)


@pytest.fixture
def exact_engine(exact_session_engine):
    """One engine for the session's runs compared bitwise with a straight run, so a straight run
    serves every test comparing with it. Each test leaves it as it found it: no fault injected,
    nothing queued or running."""
    engine = exact_session_engine
    yield engine
    engine.supervisor.extra_env = {}
    for job in engine.views.list_jobs(LOCAL_USER):
        if job["status"] not in SETTLED:
            engine.jobs.cancel(LOCAL_USER, job["job_id"])
            wait_for_status(engine, job["job_id"])


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One real single-node Slurm (two faked GPUs) for every cluster test of the session."""
    from slurm_cluster import SlurmCluster, missing

    why = missing()
    if why:
        pytest.skip(f"no Slurm here: {why}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, AssertionError) as exc:  # a daemon ended, or a wait ran out
        cluster.stop()
        pytest.fail(f"the Slurm test cluster did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cluster_console(slurm_cluster, tmp_path_factory):
    """`app.py --cluster slurm` on the test cluster, one for the tests of a file."""
    from slurm_jobs import close_cluster_console, open_cluster_console

    process, client = open_cluster_console(
        slurm_cluster, tmp_path_factory.mktemp("slurm-console") / "workspace")
    yield client, slurm_cluster
    close_cluster_console(process)
