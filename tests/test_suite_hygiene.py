"""The suite's own rules: the unit tier starts no process; consoles and the test Slurm leave no
process behind them."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from harness import (
    REPO,
    call,
    console_client,
    outliving,
    start_console,
    started_by,
    stop_console,
    wait_until,
    wait_warm,
)
from slurm_cluster import missing, processes_of, stop_processes_of, stop_stale_clusters


def test_a_unit_test_that_starts_a_process_fails_saying_so():
    with pytest.raises(AssertionError, match="a unit test started a process: .*'true'"):
        subprocess.run(["true"])
    with pytest.raises(AssertionError, match="a unit test started a process"):
        subprocess.Popen([sys.executable, "-c", "pass"])


@pytest.mark.slow
def test_the_last_check_kills_and_names_what_outlived_the_tests(tmp_path):
    """The session's last check (conftest's pytest_sessionfinish) finds a process still working
    in the session's folder, such as a trainer nobody followed, kills it with its group and
    names it; a process elsewhere (a sibling folder whose name begins with its) is left alone."""
    job_file = tmp_path / "jobs" / "lost" / "job.yaml"
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                              str(job_file)], start_new_session=True)
    elsewhere = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                  f"{tmp_path}-sibling/job.yaml"])  # a folder it only begins
    try:
        found = outliving(tmp_path, grace_s=0.5)
        assert len(found) == 1 and found[0].startswith(f"pid {stray.pid}: ") \
            and str(job_file) in found[0], found
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert elsewhere.poll() is None
        assert outliving(tmp_path, grace_s=0) == []
    finally:
        for process in (stray, elsewhere):
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_last_check_leaves_alone_what_runs_the_tests(tmp_path):
    """pytest under a wrapper (`timeout 900 pytest --basetemp=FOLDER`): the wrapper names the
    folder in its command line, yet it runs the suite; the check must not kill it."""
    check = ("import pathlib, sys; sys.path.insert(0, sys.argv[1]); from harness import outliving;"
             " print(outliving(pathlib.Path(sys.argv[2]), grace_s=0))")
    wrapper = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run("
               "sys.argv[1:], capture_output=True, text=True).stdout.strip() != '[]')",
               sys.executable, "-c", check, str(REPO / "tests"), str(tmp_path)]
    assert subprocess.run(wrapper, timeout=60).returncode == 0  # the check found nothing


# ---- consoles stop everything they started ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["stopped", "crashed first"])
def test_stopping_a_console_stops_its_spare_and_its_warm_started_trainer(tmp_path, ending):
    """Trainers outlive a console by design; a test's console must leave none behind, even one
    that died (SIGKILL) before the test stopped it, its trainers orphaned."""
    process, url = start_console(tmp_path / "workspace")
    try:
        client = console_client(url)
        wait_warm(client)
        job_id = call(client, "/submit_job", {"max_steps": 100000, "save_steps": 100000})["job_id"]
        job = wait_until(lambda: (j := call(client, "/get_job", job_id))["pid"] and j, 120,
                         "the job's trainer to start")
        health = call(client, "/health")["warm_start"]
        assert health["jobs_started_warm"] == 1, health  # a copy of the spare runs the job
        started = [psutil.Process(pid) for pid in (process.pid, health["pid"], job["pid"])]
        if ending == "crashed first":
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert started[2].is_running()  # the orphaned trainer still trains
    finally:
        stop_console(process)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert started_by(process.tag) == []


# ---- the test Slurm stops its daemons, even when the run is killed -------------------------------


def stand_in_daemon(conf: Path) -> subprocess.Popen:
    """A process that passes for a cluster's daemon: it carries the cluster's SLURM_CONF."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            env={**os.environ, "SLURM_CONF": str(conf)}, start_new_session=True)


@pytest.mark.slow
def test_a_cluster_whose_run_died_is_stopped_and_one_still_owned_is_left(tmp_path):
    registry, dead, live = tmp_path / "registry", tmp_path / "dead", tmp_path / "live"
    registry.mkdir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    orphan, owned = stand_in_daemon(dead / "slurm.conf"), stand_in_daemon(live / "slurm.conf")
    try:
        me = psutil.Process()
        (registry / "1-dead.json").write_text(json.dumps(
            {"conf": str(dead / "slurm.conf"), "owner": ended.pid, "owner_started": 0.0}))
        (registry / "2-live.json").write_text(json.dumps(
            {"conf": str(live / "slurm.conf"), "owner": me.pid,
             "owner_started": me.create_time()}))
        assert stop_stale_clusters(registry) == [str(dead / "slurm.conf")]
        assert processes_of(str(dead / "slurm.conf")) == []  # (reaped by the stop: no code)
        assert owned.poll() is None  # another run's cluster (an xdist worker's) stays
        assert [p.name for p in registry.iterdir()] == ["2-live.json"]
    finally:
        for process in (orphan, owned):
            process.kill()
            process.wait()


# SIGINT as a run in a terminal has it (a shell starts background commands with it ignored).
CLUSTER_RUN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from slurm_cluster import SlurmCluster
SlurmCluster(Path(sys.argv[1]), registry=Path(sys.argv[2])).start()
print("started", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_killed_test_run_leaves_no_slurm_daemon(tmp_path, kill):
    """SIGTERM and SIGINT: the run stops its cluster itself. SIGKILL: the next run does."""
    why = missing()
    if why:
        pytest.skip(f"no Slurm here: {why}")
    folder, registry = tmp_path / "slurm", tmp_path / "registry"
    run = subprocess.Popen([sys.executable, "-c", CLUSTER_RUN, str(folder), str(registry)],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{REPO}"},
                           stdout=subprocess.PIPE, text=True)
    conf = str(folder / "slurm.conf")
    try:
        assert run.stdout.readline() == "started\n", "the test cluster did not start"
        assert {p.name() for p in processes_of(conf)} >= {"munged", "slurmctld", "slurmd"}
        run.send_signal(kill)
        run.wait(timeout=90)  # stop() is bounded at 10 + 3 x 5 + 30 s
        if kill == signal.SIGKILL:
            assert processes_of(conf)  # left running: what the next run must clean up
            assert stop_stale_clusters(registry) == [conf]
        assert processes_of(conf) == []
        assert list(registry.iterdir()) == []
    finally:
        run.kill()
        run.wait()
        stop_processes_of(conf)
