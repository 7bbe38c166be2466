"""The trainer: `python -m engine.train <job.yaml>`.

This is the exact command the console's scheduler runs, and the headless CLI. It writes into the
job folder (the folder of job.yaml, or --output-dir): training.log, metrics.jsonl,
heartbeat.json, checkpoint-N/ folders and the final model/ (an adapter for LoRA/QLoRA). Exit codes
are in engine.jobfiles: 0 completed, 1 failed, 2 invalid job, 75 paused, 76 cancelled.

job.yaml is either a job file written by the console (`config:` holds the resolved config) or a
plain config (`preset:` plus overrides), resolved here the way the console would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.atomic import write_json_atomic
from engine.config import ConfigError, JobConfig
from engine.data import DatasetError
from engine.jobfiles import (
    CANCEL,
    EXIT_CANCELLED,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_PAUSED,
    PAUSE,
    SUPERVISED_ENV,
    JobPaths,
    checkpoint_step,
    read_json,
    requested,
    truncate_after,
)
from engine.machine import detect
from engine.presets import PresetLibrary
from engine.resolve import resolve
from engine.trainer.errors import TrainingGaveUp
from engine.trainer.faults import faults
from engine.trainer.heartbeat import Heartbeat
from engine.trainer.preemption import PREEMPTION
from engine.trainer.trackers import run_name


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_file", type=Path, help="job.yaml written by the console, or a config")
    parser.add_argument("--output-dir", type=Path, help="job folder (default: job.yaml's folder)")
    parser.add_argument("--resume-from", help=f"checkpoint-N folder name to resume from, or "
                                              f"{LATEST} (the latest complete one, if any)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = JobPaths((args.output_dir or args.job_file.parent).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    if os.environ.get(SUPERVISED_ENV) != "1":
        return run_logged(argv if argv is not None else sys.argv[1:], paths)
    code = EXIT_FAILED
    launched_by_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    stop: dict[str, str] = {}  # why it stopped early, when it did: a request or a cluster notice
    try:
        code = train(args, paths, stop)
    except (ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_INVALID
    except TrainingGaveUp as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_FAILED
    finally:
        # How this process ended, for a console that re-attached to it and cannot wait() on it.
        # Under torchrun the console watches torchrun itself (this process's parent), and rank 0
        # speaks for the job.
        if int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(paths.exit_record, {
                "pid": os.getppid() if launched_by_torchrun else os.getpid(), "code": code,
                "time": time.time(), **stop})
    if launched_by_torchrun and code in (EXIT_PAUSED, EXIT_CANCELLED):
        return EXIT_COMPLETED  # torchrun takes any other code for a crash; exit.json has the truth
    return code


def announce(job: JobFile) -> None:
    config = job.config
    print(f"job {job.job_id}: {config.method} {config.adapter} on {config.model} with "
          f"{config.dataset}", flush=True)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        print(f"devices: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", flush=True)


def resume_point(asked: str | None, paths: JobPaths) -> str | None:
    """The checkpoint to resume from; `latest` (a requeued cluster job) is wherever it got to,
    and the metrics after it are dropped, since they will be trained again."""
    if asked != LATEST:
        return asked
    latest = paths.latest_checkpoint()
    truncate_after(paths.metrics, checkpoint_step(latest.name) if latest else 0)
    return latest.name if latest else None


def run_logged(argv: list[str], paths: JobPaths) -> int:
    """Run by hand: train in a child process whose output goes both to the terminal and to
    training.log, exactly as under the console (which redirects it itself)."""
    env = {**os.environ, SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1"}
    with open(paths.log, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "engine.train", *argv], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        for line in child.stdout:
            log.write(line)
            log.flush()
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        return child.wait()


EXIT_FOR = {PAUSE: EXIT_PAUSED, CANCEL: EXIT_CANCELLED}
LATEST = "latest"


@dataclass
class JobFile:
    """What job.yaml gives the trainer: the resolved config and the console's extras."""

    job_id: str
    config: JobConfig
    resume_from: str | None
    cache_dir: Path
    name: str = ""
    owner: str = "local"
    sweep: dict | None = None
    tracking_dir: Path | None = None  # where MLflow's and Trackio's stores live

    def tracker_tags(self) -> dict[str, str]:
        from engine.trainer.trackers import tags

        return tags(self.job_id, self.name, self.owner, self.sweep)


def read_job_file(job_file: Path, paths: JobPaths) -> JobFile:
    try:
        data = yaml.safe_load(job_file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"job file {job_file}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"job file {job_file}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"job file {job_file}: expected a mapping")
    cache_dir = Path(data.get("cache_dir") or paths.root / ".cache")
    tracking_dir = Path(data.get("tracking_dir") or paths.root / "tracking")
    if isinstance(data.get("config"), dict):  # written by the console: resolved already
        job_id = str(data.get("job_id") or paths.root.name)
        sweep = data.get("sweep") if isinstance(data.get("sweep"), dict) else None
        return JobFile(job_id, JobConfig.from_dict(data["config"]), data.get("resume_from"),
                       cache_dir, str(data.get("name") or job_id), str(data.get("owner") or
                                                                      "local"),
                       sweep, tracking_dir)
    # A plain config: resolved as the console would, relative to the file's folder.
    resolution = resolve(data, PresetLibrary(), detect(), base_dir=job_file.parent)
    return JobFile(paths.root.name, resolution.config, None, cache_dir,
                   resolution.config.name or paths.root.name, tracking_dir=tracking_dir)


def train(args: argparse.Namespace, paths: JobPaths, stop: dict[str, str]) -> int:
    """config -> model and adapter -> data -> trainer -> train -> save. `stop` is filled with why
    it stopped early, if it did (for exit.json)."""
    rank = int(os.environ.get("RANK", "0"))
    heartbeat = Heartbeat(paths.heartbeat if rank == 0 else None)
    heartbeat.start_background("loading")
    started = time.time()
    phases: dict[str, float] = {}

    # ---- config ---------------------------------------------------------------------------------
    job, resume_from = start_job(args, paths)
    config = job.config

    # ---- model and adapter, then data -----------------------------------------------------------
    model, data = load_model_and_data(config, heartbeat)
    phases["load_s"] = time.time() - started

    # ---- trainer --------------------------------------------------------------------------------
    build_for = trainer_builder(job, paths, model, data, heartbeat)
    trainer, control = build_for(config)
    phases["tokenize_s"] = time.time() - started - phases["load_s"]
    early = stopped_before_training(paths, rank)
    if early is not None:
        return early

    # ---- train ----------------------------------------------------------------------------------
    trainer, control, config = run_training(build_for, config, paths, resume_from,
                                            (trainer, control), phases)
    heartbeat.beat(force=True, phase="saving")
    if control.stopped_for:
        return honoured(control, trainer.state.global_step, stop)

    # ---- save -----------------------------------------------------------------------------------
    finish(trainer, config, paths, phases)
    heartbeat.beat(force=True, phase="done")
    print(f"saved {paths.final_model} after {time.time() - started:.1f}s", flush=True)
    return EXIT_COMPLETED


def start_job(args: argparse.Namespace, paths: JobPaths) -> tuple[JobFile, str | None]:
    """The job file read and checked, and the checkpoint it resumes from; only then the heavy
    libraries, so a bad job fails in a second."""
    PREEMPTION.install()  # again for a trainer copied from a spare (engine.train is not __main__)
    if "sigterm-at-start" in faults():
        os.kill(os.getpid(), signal.SIGTERM)
    job = read_job_file(args.job_file, paths)
    resume_from = resume_point(args.resume_from or job.resume_from, paths)
    announce(job)
    from engine.trainer import build

    build.announce_rank()
    start_reporting(job, paths)
    return job, resume_from


def load_model_and_data(config: JobConfig, heartbeat: Heartbeat):
    """The model with its adapter, then the dataset, read and described in the log."""
    from engine.trainer import build

    model = build.model_and_adapter(config)
    heartbeat.beat(force=True, phase="reading data")
    data = build.read_data(config)
    print(data.describe(), flush=True)
    return model, data


def trainer_builder(job: JobFile, paths: JobPaths, model, data, heartbeat: Heartbeat):
    """A function that builds the trainer for a config: first the job's, then again for each
    fallback (a lower micro-batch, for one) on the same model and data."""
    from engine.trainer import build

    def build_for(settings: JobConfig):
        return build.build_trainer(settings, paths, job.cache_dir, model, data, heartbeat,
                                   run_name(job.job_id, job.name))

    return build_for


def run_training(build_for, config: JobConfig, paths: JobPaths, resume_from: str | None, first,
                 phases: dict[str, float]):
    """Training itself, through fallback.train (which may rebuild the trainer), timed into
    `phases`. Returns the trainer, its control and the config it ended with."""
    from engine.trainer import fallback

    if resume_from:
        print(f"resuming from {resume_from}", flush=True)
    train_started = time.time()
    result = fallback.train(build_for, config, paths, resume_from, first=first)
    phases["train_s"] = time.time() - train_started
    return result


def stopped_before_training(paths: JobPaths, rank: int) -> int | None:
    """The exit code of a pause or cancel asked for while the trainer was being built (every
    rank agrees on it); None to train."""
    from engine.trainer.hooks import agreed_action

    early = agreed_action(requested(paths) if rank == 0 else None)
    if not early:
        return None
    print(f"{early} before training started" + ("; resume starts from the beginning"
                                                if early == PAUSE else ""), flush=True)
    return EXIT_FOR[early]


def honoured(control, step: int, stop: dict[str, str]) -> int:
    """The exit code of a stop at a step's end, and why it stopped into `stop` (for exit.json):
    a pause or cancel request, or the cluster's notice (never to be taken for a pause)."""
    why = f" ({control.notice} from the cluster)" if control.notice else ""
    print(f"{control.stopped_for} honoured at step {step}{why}", flush=True)
    stop.update(control.stop_record())
    return EXIT_FOR[control.stopped_for]


def finish(trainer, config: JobConfig, paths: JobPaths, phases: dict[str, float]) -> None:
    """A completed run: its final evaluation, the model and the summary."""
    from engine.trainer.hooks import die_if_injected

    die_if_injected("kill-before-model")
    evaluate_final(trainer, config)
    save(trainer, paths, phases, stopped_early(trainer))
    die_if_injected("kill-before-exit")  # all written but exit.json


def evaluate_final(trainer, config: JobConfig) -> None:
    """A job that evaluates ends with the eval loss of its final model, also when its last step
    is not a multiple of eval_steps (a run shorter than one interval is evaluated once)."""
    step = trainer.state.global_step
    if config.evaluates and not any(entry.get("step") == step and "eval_loss" in entry
                                    for entry in trainer.state.log_history):
        trainer.evaluate()


def start_reporting(job: JobFile, paths: JobPaths) -> None:
    """Point the job's experiment trackers (report_to) at their stores."""
    if job.config.trackers:
        from engine.trainer import trackers

        trackers.prepare(job.config.trackers, paths, job.tracking_dir, job.tracker_tags())
        print(f"reporting to {', '.join(job.config.trackers)}", flush=True)


def stopped_early(trainer) -> str | None:
    """Why the run ended before its last step, when early stopping ended it."""
    from engine.trainer.hooks import EarlyStopping

    return next((c.reason for c in trainer.callback_handler.callbacks
                 if isinstance(c, EarlyStopping) and c.reason), None)


def save(trainer, paths: JobPaths, phases: dict[str, float],
         stopped_early: str | None = None) -> None:
    """The final model (an adapter, or every weight), and the run's summary beside it."""
    save_started = time.time()
    save_model_whole(trainer, paths)
    phases["save_s"] = time.time() - save_started
    summary = read_json(paths.summary) or {}
    summary.update(phases)
    summary.update(global_step=trainer.state.global_step, max_steps=trainer.state.max_steps)
    if stopped_early:
        summary["stopped_early"] = stopped_early
    write_json_atomic(paths.summary, summary)


def save_model_whole(trainer, paths: JobPaths) -> None:
    """model/ appears complete or not at all: it is written aside and renamed into place, so a
    trainer killed while saving leaves no half model to download, and a resume writes it again."""
    from engine.trainer.hooks import die_if_injected, fsync_tree

    writes = trainer.args.should_save  # under DDP only rank 0 writes files
    if writes:
        shutil.rmtree(paths.partial_model, ignore_errors=True)
    trainer.save_model(str(paths.partial_model))
    if not writes:
        return
    fsync_tree(paths.partial_model)
    die_if_injected("kill-in-model-save")
    shutil.rmtree(paths.final_model, ignore_errors=True)  # an earlier attempt's, killed after it
    os.rename(paths.partial_model, paths.final_model)
