"""The Slurm executor: each job that may start becomes one `sbatch` submission whose batch script
runs the same `python -m engine.train job.yaml` (under `srun torchrun` for several processes or
nodes). The trainer protocol is unchanged: the workspace is on storage every node mounts, so the
console follows metrics, heartbeat, checkpoints and exit.json as it does locally, and asks
Slurm's own tools (`sbatch`, `squeue`, `scontrol`, `scancel`; machine-readable output only) for
what only Slurm knows: pending or running, why it waits, on which nodes, and how it ended.
Slurm places the work; TrainDeck keeps the queue, priorities and quotas."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import REPO_DIR
from engine.console.records.job import Job
from engine.console.running.cluster import ClusterSettings
from engine.console.running.following import TrainerExit
from engine.console.running.supervisor import Supervisor, attempt_banner
from engine.console.running.trainers import Trainer
from engine.jobfiles import CANCEL, EXIT_PAUSED, JobPaths, read_json

log = logging.getLogger("traindeck.slurm")
FIELD = "|"
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
# How Slurm ended a job that left no exit record, in words for the job's error.
ENDED_BY_SLURM = {
    "TIMEOUT": "Slurm ended the job at its time limit",
    "NODE_FAIL": "Slurm ended the job: its node failed",
    "OUT_OF_MEMORY": "Slurm ended the job: it ran out of memory",
    "PREEMPTED": "Slurm preempted the job",
    "BOOT_FAIL": "Slurm could not boot the job's node",
    "DEADLINE": "Slurm ended the job at its deadline",
    "CANCELLED": "the job was cancelled in Slurm (scancel)",
}
PRIORITY_NICE_STEP = 100
# squeue/scontrol at most this often: the scheduler ticks four times a second, and every query
# is a process here and an RPC to the cluster's controller.
STATE_QUERY_S = 2.0  # TrainDeck priority p becomes --nice=NICE_BASE - p * step


class SlurmError(RuntimeError):
    pass


@dataclass
class SlurmState:
    state: str
    reason: str = ""
    nodes: str = ""
    exit_code: str = ""  # "N:S" (exit code : signal), once ended

    def describe(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason, "nodes": self.nodes}


class SlurmClient:
    """Slurm's commands, with the environment (SLURM_CONF) the console was started with."""

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s

    def _run(self, *argv: str) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise SlurmError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()[:500]}")
        return done.stdout

    def submit(self, script: Path, options: list[str]) -> str:
        out = self._run("sbatch", "--parsable", *options, str(script))
        return out.strip().split(";")[0]  # "id" or "id;cluster"

    def states(self, ids: list[str]) -> dict[str, SlurmState]:
        """Each job's state: squeue for pending and running ones, scontrol for ended ones that
        Slurm still remembers (MinJobAge). A job in neither is absent from the answer."""
        if not ids:
            return {}
        found: dict[str, SlurmState] = {}
        out = self._run("squeue", "-h", "--states=all", "-j", ",".join(ids),
                        "-o", FIELD.join(("%i", "%T", "%r", "%N")))
        for line in out.splitlines():
            parts = line.split(FIELD)
            if len(parts) == 4 and parts[0] in ids:
                found[parts[0]] = SlurmState(parts[1], "" if parts[2] == "None" else parts[2],
                                             parts[3])
        for job_id in ids:
            if job_id not in found or found[job_id].state not in ACTIVE:
                ended = self.show(job_id)
                if ended is not None:
                    found[job_id] = ended
        return found

    def show(self, job_id: str) -> SlurmState | None:
        try:
            out = self._run("scontrol", "show", "job", "-o", job_id)
        except SlurmError:
            return None  # Slurm no longer knows it
        fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
        if "JobState" not in fields:
            return None  # no answer to read: concluded from nothing, an ending would be a guess
        return SlurmState(fields["JobState"], fields.get("Reason", ""),
                          fields.get("NodeList", ""), fields.get("ExitCode", ""))

    def cancel(self, job_id: str) -> None:
        self._run("scancel", job_id)


def train_command(job: Job, paths: JobPaths, settings: ClusterSettings) -> str:
    """One process: the trainer itself. Several (GPUs or nodes): srun starts one torchrun per
    node, which starts one rank per GPU; rank 0 speaks for the job, as locally."""
    python = shlex.quote(settings.python or sys.executable)
    train = f"-m engine.train {shlex.quote(str(paths.job_file))}"
    processes = job.config.gpus
    nodes = job.config.nodes
    if processes * nodes == 1:
        return f"{python} {train}"
    return (f"srun --kill-on-bad-exit=1 {python} -m torch.distributed.run "
            f"--nnodes=\"$SLURM_NNODES\" --nproc_per_node={processes} "
            f"--rdzv_backend=c10d --rdzv_endpoint=\"$(scontrol show hostnames "
            f"\"$SLURM_JOB_NODELIST\" | head -n1):29500\" --rdzv_id=\"$SLURM_JOB_ID\" {train}")


def batch_script(job: Job, paths: JobPaths, settings: ClusterSettings) -> str:
    """The sbatch script: the trainer's command, resuming when Slurm requeued the job, with
    Slurm's notices passed on to the trainer."""
    run = train_command(job, paths, settings)
    log_file = shlex.quote(str(paths.log))
    return "\n".join([
        "#!/bin/bash",
        f"# TrainDeck job {job.job_id}, attempt {job.attempt}",
        f"cd {shlex.quote(str(REPO_DIR))}",
        'export PYTHONUNBUFFERED=1 TRAINDECK_SUPERVISED=1 '
        f'PYTHONPATH={shlex.quote(str(REPO_DIR))}${{PYTHONPATH:+:$PYTHONPATH}}',
        'resume=""',
        'if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then',
        '    resume="--resume-from latest"',
        # The run Slurm stopped left its exit record: it must not speak for this run.
        f"    rm -f {shlex.quote(str(paths.exit_record))}",
        f'    echo "requeued by Slurm (restart $SLURM_RESTART_COUNT): resuming from the latest '
        f'checkpoint" >> {log_file}',
        "fi",
        f"echo \"slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST\" >> {log_file}",
        # In the background, so that this shell can pass Slurm's notices on: SIGTERM (requeue,
        # preemption) and USR1 (the time limit is near) make the trainer checkpoint and stop.
        f"{run} $resume >> {log_file} 2>&1 &",
        "child=$!",
        'noticed=""',
        "trap 'noticed=USR1; kill -USR1 $child 2>/dev/null' USR1",
        "trap 'noticed=TERM; kill -TERM $child 2>/dev/null' TERM",
        "while true; do wait $child; code=$?; kill -0 $child 2>/dev/null || break; done",
        # Checkpointed ahead of the time limit: back into the queue, to go on from there.
        'if [ "$code" -eq 75 ] && [ "$noticed" = USR1 ]; then',
        '    scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "fi",
        "exit $code",
        "",
    ])


def sbatch_options(job: Job, paths: JobPaths, settings: ClusterSettings) -> list[str]:
    options = [f"--job-name=traindeck-{job.job_id}", f"--output={paths.root / 'slurm-%j.out'}",
               f"--nodes={job.config.nodes}", "--ntasks-per-node=1", "--requeue",
               f"--signal=B:USR1@{settings.notice_seconds}",
               f"--nice={max(0, settings.nice_base - job.priority * PRIORITY_NICE_STEP)}"]
    if job.config.gpus and settings.gpus:
        options.append(f"--gres=gpu:{job.config.gpus}")
    for flag, value in (("partition", settings.partition), ("account", settings.account),
                        ("qos", settings.qos), ("time", settings.time_limit)):
        if value:
            options.append(f"--{flag}={value}")
    options.extend(settings.sbatch_extra)
    return options


@dataclass
class SlurmTrainer(Trainer):
    client: Any = None
    slurm_id: str = ""
    slurm: SlurmState = field(default_factory=lambda: SlurmState("PENDING"))
    running_since: float | None = None
    missing_rounds: int = 0
    ended_record: dict[str, Any] | None = None  # exit.json as read when the job was seen ended

    def note(self, state: SlurmState | None, now: float) -> None:
        if state is None:
            self.missing_rounds += 1
            return
        self.missing_rounds = 0
        self.slurm = state
        if state.state != "RUNNING":
            self.running_since = None  # pending (again, after a requeue): not a hung trainer
        elif self.running_since is None:
            self.running_since = now

    def poll_exit(self) -> int | None:
        if self.slurm.state in ACTIVE and self.missing_rounds < 3:
            return None
        # Read once, and every fact of this ending (code, Slurm's reason, the notice) taken from
        # that one reading: a run Slurm restarts meanwhile removes the file (batch script).
        recorded = read_json(self.paths.exit_record)
        self.ended_record = recorded if isinstance(recorded, dict) else {}
        code = self.recorded_exit()
        if code is not None:
            return code
        number, _, sig = self.slurm.exit_code.partition(":")
        if sig.isdigit() and int(sig):
            return -int(sig)
        return int(number) if number.isdigit() and int(number) else -signal.SIGKILL

    def exit_record(self) -> dict[str, Any]:
        # The trainer ran on a node: its pid there means nothing here. The record was removed
        # before this attempt was submitted, and by the batch script before each run Slurm
        # restarts, so the one read when the job ended is this run's.
        return self.ended_record or {}

    def has_exit_record(self) -> bool:
        return self.recorded_exit() is not None

    def cluster_reason(self) -> str | None:
        if self.recorded_exit() not in (None, EXIT_PAUSED):  # a checkpoint on Slurm's notice
            return None
        if self.missing_rounds >= 3:
            return f"Slurm no longer knows job {self.slurm_id}"
        return ENDED_BY_SLURM.get(self.slurm.state)

    def job_fields(self) -> dict[str, Any]:
        return {"cluster_job": {"scheduler": "slurm", "id": self.slurm_id}}

    def kill(self) -> None:
        if self.slurm.state in ACTIVE:
            try:
                self.client.cancel(self.slurm_id)
            except Exception as exc:  # noqa: BLE001 - reported, the poll goes on
                log.error("scancel %s: %s", self.slurm_id, exc)

    def note_processes(self) -> None:
        pass  # the processes are on the node; Slurm owns them

    def reap_after_kill(self) -> int:
        return -signal.SIGKILL

    def last_progress_time(self) -> float:
        # Waiting in Slurm's queue is not a hung trainer: the timeout counts from its start.
        if self.running_since is None:
            return time.time()
        return max(self.heartbeat_time, self.running_since)


class SlurmSupervisor(Supervisor):
    """The supervisor with Slurm as the executor: same following, other launching."""

    def __init__(self, cache_dir: Path, settings: ClusterSettings,
                 client: SlurmClient | None = None):
        super().__init__(cache_dir, warm_start=False)
        self.settings = settings
        self.client = client or SlurmClient()
        self.queried_at = 0.0

    def keep_spare(self) -> None:
        pass  # the trainers run on the cluster's nodes

    def launch(self, job: Job, paths: JobPaths, env: dict[str, str] | None = None) -> Trainer:
        self.prepare(job, paths)
        script = paths.root / "slurm-job.sh"
        script.write_text(batch_script(job, paths, self.settings))
        with open(paths.log, "ab") as log_file:
            log_file.write(attempt_banner(job, " (Slurm)"))
        try:
            slurm_id = self.client.submit(script, sbatch_options(job, paths, self.settings))
        except SlurmError as exc:
            raise OSError(str(exc)) from exc  # the scheduler fails the job with this reason
        trainer = SlurmTrainer(job.job_id, paths, 0, job.config.timeout_minutes * 60, time.time(),
                               client=self.client, slurm_id=slurm_id)
        self.running[job.job_id] = trainer
        log.info("job %s submitted to Slurm as %s", job.job_id, slurm_id)
        return trainer

    def attach(self, job: Job, paths: JobPaths) -> Trainer:
        slurm_id = str((job.cluster_job or {}).get("id", ""))
        trainer = SlurmTrainer(job.job_id, paths, 0, job.config.timeout_minutes * 60, time.time(),
                               client=self.client, slurm_id=slurm_id)
        trainer.attached = True
        self.running[job.job_id] = trainer
        return trainer

    def request_stop(self, job_id: str, action: str, now: float | None = None) -> None:
        super().request_stop(job_id, action, now)
        trainer = self.running.get(job_id)
        if trainer is None:
            return
        if action == CANCEL or trainer.slurm.state == "PENDING":
            # Nothing runs yet to honour a request file: take it out of Slurm's queue.
            trainer.kill()

    def poll(self, now: float | None = None) -> list[TrainerExit]:
        now = time.time() if now is None else now
        if now - self.queried_at >= STATE_QUERY_S:
            trainers = [t for t in self.running.values() if isinstance(t, SlurmTrainer)]
            try:
                states = self.client.states([t.slurm_id for t in trainers if t.slurm_id])
            except SlurmError as exc:
                log.error("cannot ask Slurm for job states: %s", exc)
                return []  # nothing is concluded from a failed query
            self.queried_at = now
            for trainer in trainers:
                trainer.note(states.get(trainer.slurm_id), now)
        return super().poll(now)

    def progress(self, job_id: str) -> dict[str, Any] | None:
        found = super().progress(job_id)
        trainer = self.running.get(job_id)
        if found is not None and isinstance(trainer, SlurmTrainer):
            found["cluster"] = {"id": trainer.slurm_id, **trainer.slurm.describe()}
            if trainer.slurm.state != "RUNNING":
                found["phase"] = f"{trainer.slurm.state.lower()} in Slurm"
        return found



def slurm_available() -> str | None:
    """Why Slurm's commands cannot be used here (None: they can)."""
    for command in ("sbatch", "squeue", "scontrol", "scancel"):
        if not any(os.access(Path(d) / command, os.X_OK)
                   for d in os.environ.get("PATH", "").split(os.pathsep) if d):
            return f"{command} is not on PATH"
    return None
