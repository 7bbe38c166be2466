"""Starts and stops trainers: launches each in its own process group (or as a copy of the warm
spare), re-attaches to those an earlier console started, and delivers pause/cancel requests.
Following them once started (metrics, heartbeat, limits, how each ended) is the TrainerFollower's
part (engine.console.running.following), which the Supervisor extends.

Modelled on a work-horse monitor: wait without blocking, kill the whole process group after a
grace period or a silent heartbeat, and explain every failure with its cause and the log's tail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from engine import REPO_DIR
from engine.atomic import write_atomic
from engine.console.records.job import Job
from engine.console.running.following import TrainerFollower
from engine.console.running.spares import PER_JOB_ENV, Spares
from engine.console.running.trainers import (
    AttachedTrainer,
    ChildTrainer,
    ForkedTrainer,
    TorchrunTrainer,
    Trainer,
    is_alive,
)
from engine.jobfiles import (
    CANCEL,
    PAUSE,
    SUPERVISED_ENV,
    JobPaths,
    checkpoint_step,
    clear_requests,
    request,
    truncate_after,
)


def trainer_command(job_file: Path, processes: int = 1) -> list[str]:
    """One process, or one per GPU under torchrun (DDP), on a free rendezvous port."""
    train = ["-m", "engine.train", str(job_file)]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={processes}", *train]
    return [sys.executable, *train]


def write_job_file(paths: JobPaths, job: Job, cache_dir: Path, resume_from: str | None) -> None:
    """The trainer's input; it also carries what `repair-db` needs to rebuild the job's record."""
    paths.root.mkdir(parents=True, exist_ok=True)
    document = {"job_id": job.job_id, "name": job.name, "config": job.config.to_dict(),
                "resume_from": resume_from, "cache_dir": str(cache_dir),
                "owner": job.owner, "priority": job.priority, "seq": job.seq,
                "created_at": job.created_at, "shared": job.shared, "sweep": job.sweep,
                # the workspace's: the trackers' shared stores (MLflow, Trackio)
                "tracking_dir": str(cache_dir.parent / "tracking")}
    write_atomic(paths.job_file, yaml.safe_dump(document, sort_keys=False))


def attempt_banner(job: Job, where: str = "") -> bytes:
    """The line each attempt starts the job's log with: when, from which checkpoint, where."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    resumed = f" from {job.resume_from}" if job.resume_from else ""
    return f"\n==== attempt {job.attempt} at {started}{resumed}{where} ====\n".encode()


def trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every trainer starts with (a job adds its own devices to it)."""
    path = os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
            # Asking torch whether there is a GPU then asks NVML, without initialising CUDA: a
            # spare trainer must leave CUDA alone until it knows its devices.
            "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


class Supervisor(TrainerFollower):
    def __init__(self, cache_dir: Path, extra_env: dict[str, str] | None = None,
                 warm_start: bool = True):
        super().__init__()
        self.cache_dir = cache_dir
        self.extra_env = extra_env or {}
        self.spares = Spares(cache_dir / "spares", enabled=warm_start)

    def keep_spare(self) -> None:
        """Have a spare trainer ready for the next job (warm start)."""
        self.spares.start({k: v for k, v in trainer_env(self.extra_env).items()
                           if k not in PER_JOB_ENV})

    # ---- starting -------------------------------------------------------------------------------

    def start_delay(self, job: Job, now: float) -> str | None:
        """Why the job should not start just yet (None: it can start now)."""
        if job.config.gpus * job.config.nodes != 1:
            return None  # torchrun's ranks always start fresh
        waited = self.spares.importing(trainer_env(self.extra_env), now)
        if waited is None:
            return None
        return f"the warm trainer is importing its libraries ({waited:.0f} s so far)"

    def prepare(self, job: Job, paths: JobPaths) -> None:
        """The job folder as a new attempt finds it: no old requests, exit record or heartbeat,
        metrics up to the checkpoint it resumes from, and its job file."""
        clear_requests(paths)
        paths.exit_record.unlink(missing_ok=True)
        if job.resume_from:
            truncate_after(paths.metrics, checkpoint_step(job.resume_from) or 0)
        else:
            paths.metrics.unlink(missing_ok=True)  # a fresh start (or restart from scratch)
        paths.heartbeat.unlink(missing_ok=True)
        write_job_file(paths, job, self.cache_dir, job.resume_from)

    def launch(self, job: Job, paths: JobPaths, env: dict[str, str] | None = None) -> Trainer:
        self.prepare(job, paths)
        processes = job.config.gpus
        process_env = {**trainer_env(self.extra_env), **(env or {})}
        command = trainer_command(paths.job_file, processes)
        with open(paths.log, "ab") as log:
            log.write(attempt_banner(job))
            log.flush()
            # One process: a copy of the spare trainer takes the job if it can (warm start);
            # torchrun's ranks, or anything the spare cannot serve exactly, start fresh.
            pid = self.spares.take(command, process_env, paths.log) if processes == 1 else None
            if pid is None:
                popen = subprocess.Popen(command, cwd=REPO_DIR, env=process_env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)  # own group: outlives the console
        timeout_s = job.config.timeout_minutes * 60
        if pid is not None:
            trainer = ForkedTrainer(job.job_id, paths, pid, timeout_s, time.time(),
                                    spares=self.spares)
        else:
            kind = TorchrunTrainer if processes > 1 else ChildTrainer
            trainer = kind(job.job_id, paths, popen.pid, timeout_s, time.time(),
                           processes=processes, popen=popen)
        self.running[job.job_id] = trainer
        return trainer

    def attach(self, job: Job, paths: JobPaths) -> Trainer:
        """Follow a trainer started by an earlier console. If it is already gone, the next
        poll reaps it from its exit record (or reports it interrupted)."""
        alive = job.pid is not None and is_alive(job.pid, paths)
        trainer = AttachedTrainer(job.job_id, paths, job.pid or 0, job.config.timeout_minutes * 60,
                                  time.time(), processes=job.config.gpus, alive_at_attach=alive)
        self.running[job.job_id] = trainer
        for action in (PAUSE, CANCEL):  # requests made before the restart still stand
            if paths.request_file(action).exists():
                trainer.stop_action, trainer.stop_requested_at = action, time.time()
        return trainer

    # ---- control --------------------------------------------------------------------------------

    def request_stop(self, job_id: str, action: str, now: float | None = None) -> None:
        """Ask a running trainer to pause or cancel (nothing to ask once it has ended)."""
        trainer = self.running.get(job_id)
        if trainer is None:
            return
        request(trainer.paths, action)
        if trainer.stop_action != CANCEL:  # a cancel is never downgraded to a pause
            trainer.stop_action = action
            trainer.stop_requested_at = time.time() if now is None else now

    def withdraw(self, job_id: str) -> None:
        """Stop following and kill a trainer just started for a job that no longer wants it
        (cancelled or paused while it started): it has trained nothing yet."""
        trainer = self.running.pop(job_id, None)
        if trainer is not None:
            trainer.kill()
            trainer.reap_after_kill()

    def kill_all(self) -> None:
        for trainer in self.running.values():
            trainer.kill()
