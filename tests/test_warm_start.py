"""Warm start: the spare-trainer process imports the libraries once and forks a trainer per job.
It touches no GPU before a job has one; each job runs in its own process and session with the
job's command line, the same code and exit code; the job sees exactly the devices it was given;
and it trains bitwise like a fresh process."""

import os
import signal
import sys

import psutil
import pytest
import torch
from conftest import (
    losses,
    processes_of,
    shutdown,
    wait_for_status,
    wait_for_step,
    wait_until,
)
from harness import kill_with_group
from safetensors.torch import load_file

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER
from engine.console.results.tools import Tools
from engine.console.running.spares import PER_JOB_ENV, SparePool, Spares
from engine.console.running.supervisor import trainer_env
from engine.console.running.trainers import ForkedTrainer, kill_group
from engine.jobfiles import EXIT_INVALID, JobPaths

pytestmark = pytest.mark.slow

SHORT = {"max_steps": 15, "save_steps": 100, "learning_rate": 5e-3, "warmup_steps": 0,
         "lora_dropout": 0.1}


def started(tmp_path, name, **kwargs) -> Engine:
    engine = Engine(tmp_path / name, **kwargs).start()
    engine.scheduler.tick_s = 0.1
    return engine


def adapter(engine, job_id):
    return load_file(engine.workspace.job_paths(job_id).final_model / "adapter_model.safetensors")


def test_a_warm_job_runs_as_its_own_process_and_trains_like_a_cold_one(tmp_path):
    warm, cold = started(tmp_path, "warm"), started(tmp_path, "cold", warm_start=False)
    try:
        wait_until(lambda: warm.supervisor.spares.spare.ready, 120,
                   "the spare-trainer process to finish its imports")
        spare_pid = warm.supervisor.spares.spare.popen.pid
        warm_job = warm.jobs.submit(LOCAL_USER, SHORT)["job_id"]
        pid = wait_for_step(warm, warm_job, step=1)["pid"]
        assert psutil.Process(pid).ppid() == spare_pid  # a copy of the spare process...
        assert os.getsid(pid) == pid and os.getpgid(pid) == pid  # ...in a session of its own
        job_file = warm.workspace.job_paths(warm_job).job_file
        assert [p.pid for p in processes_of(job_file)] == [pid]  # ps shows the job's command
        cold_job = cold.jobs.submit(LOCAL_USER, SHORT)["job_id"]
        assert wait_for_status(warm, warm_job)["status"] == "completed"
        assert wait_for_status(cold, cold_job)["status"] == "completed"
        assert warm.supervisor.spares.handed_off == 1 and cold.supervisor.spares.handed_off == 0
        assert losses(warm.views.get_metrics(LOCAL_USER, warm_job, 0)) == \
            losses(cold.views.get_metrics(LOCAL_USER, cold_job, 0))
        warm_weights, cold_weights = adapter(warm, warm_job), adapter(cold, cold_job)
        assert all(torch.equal(warm_weights[k], cold_weights[k]) for k in cold_weights)
        assert warm.supervisor.spares.spare.popen.pid == spare_pid  # ready for the next job
        assert warm.supervisor.spares.exit_code(pid) == 0
    finally:
        shutdown(warm)
        shutdown(cold)


def test_a_job_submitted_while_the_spare_imports_waits_for_it_and_starts_warm(tmp_path):
    """A spare process of its own (the one import of this file): it imports the libraries and
    leaves CUDA alone, a job waits for it, and it goes when its input ends."""
    engine = Engine(tmp_path / "workspace")
    pool = engine.supervisor.spares.pool = SparePool()  # a console just started: nothing imported
    engine.start()
    engine.scheduler.tick_s = 0.1
    try:
        try:
            spare = engine.supervisor.spares.spare
            job_id = engine.jobs.submit(LOCAL_USER, {**SHORT, "max_steps": 2})["job_id"]
            waiting = wait_until(lambda: engine.views.get_job(LOCAL_USER, job_id)["waiting"], 10,
                                 "the job to say what it waits for")
            assert "the warm trainer is importing its libraries" in waiting
            assert engine.views.get_job(LOCAL_USER, job_id)["status"] == "queued"
            assert wait_for_status(engine, job_id)["status"] == "completed"
            assert engine.supervisor.spares.handed_off == 1  # warm, not beside the import
            assert spare.status["status"] == "ready" and spare.status["cuda_initialized"] is False
            assert {"torch", "transformers", "trl", "peft"} <= set(spare.status["modules"])
        finally:
            shutdown(engine)
        spare.popen.stdin.close()  # no more jobs: it goes
        assert spare.popen.wait(timeout=30) == 0
    finally:
        pool.end_all()


def test_each_job_sees_the_devices_it_was_given(tmp_path):
    engine = started(tmp_path, "gpus", gpu_indices=[0, 1])  # two GPUs, as the scheduler sees it
    try:
        wait_until(lambda: engine.supervisor.spares.spare.ready, 120,
                   "the spare-trainer process to finish its imports")
        first = engine.jobs.submit(LOCAL_USER, {**SHORT, "max_steps": 2, "name": "first"})["job_id"]
        second = engine.jobs.submit(LOCAL_USER,
                                    {**SHORT, "max_steps": 2, "name": "second"})["job_id"]
        for job_id in (first, second):
            assert wait_for_status(engine, job_id)["status"] == "completed"
        given = {job_id: engine.views.get_job(LOCAL_USER, job_id)["attempts"][0]["devices"]
                 for job_id in (first, second)}
        assert sorted(given.values()) == [[0], [1]]
        for job_id, devices in given.items():
            log = engine.workspace.job_paths(job_id).log.read_text()
            assert f"devices: CUDA_VISIBLE_DEVICES={devices[0]}" in log
        assert engine.supervisor.spares.handed_off == 2  # both were warm starts
    finally:
        shutdown(engine)


def test_a_trainer_looked_at_the_instant_it_is_handed_off_is_followed_not_reported_dead(tmp_path):
    """Until the copy sets its title its command line is the spare's; the supervisor must not
    take that for a trainer gone (it once killed such a job with SIGKILL)."""
    spares = Spares(tmp_path / "spares")
    spares.start({k: v for k, v in trainer_env().items() if k not in PER_JOB_ENV})
    try:
        wait_until(lambda: spares.spare.ready, 120, "the spare-trainer process to import")
        paths = JobPaths(tmp_path / "job")
        paths.root.mkdir()
        paths.job_file.write_text("not_a_field: 1\n")  # refused by the trainer: exit 2
        command = [sys.executable, "-m", "engine.train", str(paths.job_file)]
        pid = spares.take(command, trainer_env(), paths.log)
        trainer = ForkedTrainer("job", paths, pid, 600, 0.0, spares=spares)
        assert trainer.poll_exit() is None  # at once: still running
        assert spares.wait_exit(pid, timeout=60) == EXIT_INVALID
        assert trainer.poll_exit() == EXIT_INVALID
    finally:
        spares.stop()


def test_a_trainer_killed_the_instant_it_is_handed_off_is_gone(tmp_path):
    """A job cancelled as it starts has its trainer killed at once, by process group. The copy's
    pid comes back only once the copy leads its own group, so that kill reaches it: a copy not
    yet past its setsid() was once missed, and trained on unseen for a job shown cancelled."""
    spares, copies = Spares(tmp_path / "spares"), []
    spares.start({k: v for k, v in trainer_env().items() if k not in PER_JOB_ENV})
    try:
        wait_until(lambda: spares.spare.ready, 120, "the spare-trainer process to import")
        for attempt in range(5):
            paths = JobPaths(tmp_path / f"job-{attempt}")
            paths.root.mkdir()
            os.mkfifo(paths.job_file)  # no writer: the trainer waits on it, alive, at its start
            command = [sys.executable, "-m", "engine.train", str(paths.job_file)]
            pid = spares.take(command, trainer_env(), paths.log)
            copies.append(pid)
            assert os.getpgid(pid) == pid, "the copy's pid was told before it led its group"
            kill_group(pid)
            assert spares.wait_exit(pid, timeout=30) == -signal.SIGKILL
    finally:
        for pid in copies:  # a failed check leaves no copy waiting on its FIFO
            kill_with_group(pid)
        spares.stop()


def test_a_tool_runs_in_a_copy_of_the_spare_with_its_output_exit_code_and_time_limit(tmp_path):
    """Export, GGUF export and generate run in a copy of the spare as they would fresh: the
    tool's output and errors come back, a failure is named, and one past its time limit is
    killed with everything it started."""
    spares = Spares(tmp_path / "spares")
    spares.start({k: v for k, v in trainer_env().items() if k not in PER_JOB_ENV})
    tools = Tools(spares)
    try:
        wait_until(lambda: spares.spare.ready, 120, "the spare-trainer process to import")
        job = tmp_path / "job"
        job.mkdir()
        with pytest.raises(ConfigError, match="^generation failed: error: model does not exist"):
            tools.run("engine.trainer.generate", [str(job)], "generation", stdin="Hello")
        with pytest.raises(ConfigError, match="argument --max-new-tokens: invalid int value"):
            tools.run("engine.trainer.generate", [str(job), "--max-new-tokens", "x"], "generation")
        with pytest.raises(ConfigError, match="json.tool is not one of engine.train"):
            tools.run("json.tool", [], "a module that is no tool")
        assert spares.tools_started_warm == 3 and spares.handed_off == 0

        (job / "model").mkdir()
        os.mkfifo(job / "job.yaml")  # reading the job file blocks: the tool never ends by itself
        before = set(spares.parents)
        with pytest.raises(ConfigError, match="took longer than .* minutes and was stopped"):
            tools.run("engine.trainer.generate", [str(job)], "generation", timeout_s=3)
        [copy] = set(spares.parents) - before
        assert spares.exit_code(copy) == -signal.SIGKILL and not psutil.pid_exists(copy)
        assert not list(spares.folder.glob("tool-*"))  # its input and output files went too
    finally:
        spares.stop()
