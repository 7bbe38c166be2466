"""The scheduler: starts the next queued job (priority, then submit order) when a device is free,
and turns each trainer exit into the job's final status.

`step()` does exactly one round and takes the clock as an argument, so tests drive it directly;
the background thread only calls it in a loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from engine.console.records.job import (
    IllegalTransition,
    Job,
    JobStatus,
    StatusListener,
    change_status,
)
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.launcher import Claim, Launcher
from engine.console.running.supervisor import Supervisor, TrainerExit
from engine.console.scheduling.admission import held_by_quota, preemption_victims
from engine.console.scheduling.disk import DiskWatch, start_held_back
from engine.jobfiles import EXIT_INVALID

log = logging.getLogger("traindeck.scheduler")


def queue_order(jobs: list[Job]) -> list[Job]:
    """The order queued jobs will start in: higher priority first, then first submitted."""
    queued = [j for j in jobs if j.status == JobStatus.QUEUED]
    return sorted(queued, key=lambda j: (-j.priority, j.seq))


class Scheduler:
    def __init__(self, store: JobStore, supervisor: Supervisor, workspace: Workspace,
                 devices: DevicePool, listeners: list[StatusListener] | None = None,
                 quotas_of: Callable[[str], dict[str, int | None]] | None = None,
                 disk: DiskWatch | None = None):
        self.store = store
        self.disk = disk  # below its floor no job starts
        self.quotas_of = quotas_of or (lambda owner: {})
        self.waiting: dict[str, str] = {}  # queued job -> why it cannot start yet
        self.supervisor = supervisor
        self.workspace = workspace
        self.devices = devices
        self.listeners = listeners if listeners is not None else []
        # Exits the database could not record yet (a full disk): retried every round, so a job
        # never stays "running" after its trainer ended.
        self.unrecorded: list[TrainerExit] = []
        self.launcher = Launcher(store, supervisor, workspace, devices, self.listeners)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.tick_s = 0.25
        self.cpu_seconds = 0.0  # CPU time the scheduler thread (supervision included) has used

    # ---- one round ------------------------------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        exits, unrecorded = self.unrecorded + self.supervisor.poll(now), []
        for finished in exits:
            try:
                self._finish(finished, now)
            except OSError as exc:
                log.error("job %s ended (%s) but the database cannot record it yet: %s",
                          finished.job_id, finished.status, exc)
                unrecorded.append(finished)
        self.unrecorded = unrecorded  # one assignment: views read it meanwhile
        if held := start_held_back(self.disk, self.unrecorded):
            self.waiting = {j.job_id: held for j in self.store.all((JobStatus.QUEUED.value,))}
            return  # every queued job waits, saying why: nothing starts onto a (nearly) full disk
        # Decided under the store lock, done after it: a fork, an sbatch, a scancel or a rewrite
        # of a job's files can take seconds, and every submit and list waits for this lock.
        with self.store.lock:
            claims, victims = self._plan(now)
        self.launcher.start(claims, now)
        for claim in claims:
            self.waiting.pop(claim.job_id, None)  # running now, or withdrawn
        for victim in victims:
            self._ask_to_make_room(victim, now)

    def _ask_to_make_room(self, victim: str, now: float) -> None:
        """Pause a job marked to make room; one that could not be asked is unmarked, so that the
        next round asks again instead of waiting for a pause nobody requested."""
        try:
            self.supervisor.request_stop(victim, "pause", now)
        except Exception:
            log.exception("job %s: could not ask it to pause to make room; asking again", victim)
            with self.store.lock:
                self.store.update(victim, requested=None, preempted_by=None)

    def _plan(self, now: float) -> tuple[list[Claim], list[str]]:
        """Under the store lock: the queued jobs that start now, each with its devices taken,
        and the running jobs to pause for a preempting one. Every other queued job gets the
        reason it waits."""
        jobs = self.store.all((JobStatus.QUEUED.value, JobStatus.RUNNING.value))
        running = [j for j in jobs if j.status == JobStatus.RUNNING]
        waiting: dict[str, str] = {}
        claims: list[Claim] = []
        victims: list[str] = []
        blocked = False
        for job in queue_order(jobs):
            if job.damaged:
                waiting[job.job_id] = (f"never started: its stored record is damaged "
                                       f"({job.damaged}); cancel or delete it")
                continue
            if blocked:
                waiting[job.job_id] = "behind the jobs above it"
                continue
            held = self._held_by_quota(job, running)
            if held:
                waiting[job.job_id] = held  # its owner's limit; others may go ahead
                continue
            delay = self.supervisor.start_delay(job, now)
            if delay:
                waiting[job.job_id] = delay  # a moment; it keeps its place at the head
                blocked = True
                continue
            slots = self.devices.take(job.job_id, job.config.gpus * job.config.nodes)
            if slots is not None:
                waiting[job.job_id] = "starting"  # shown while its trainer starts
                claims.append(Claim(job, slots))
                running.append(job)
                continue
            # The head of the queue waits for devices; nobody jumps it.
            waiting[job.job_id] = f"waiting for {self._needed(job)}"
            if job.config.preempt:
                victims += self._preempt_for(job, running)
            blocked = True
        self.waiting = waiting
        return claims, victims

    def _needed(self, job: Job) -> str:
        if not self.devices.gpu_indices:
            return "the CPU"
        return f"{job.config.gpus} free GPU{'s' if job.config.gpus != 1 else ''}"

    def _held_by_quota(self, job: Job, running: list[Job]) -> str | None:
        return held_by_quota(job, running, self.quotas_of(job.owner), self.devices)

    def _preempt_for(self, job: Job, running: list[Job]) -> list[str]:
        """Mark the jobs that make room for this one as paused for it, and name them: the caller
        pauses them (exactly, through the pause path) once the store lock is released. Each
        resumes by itself once it is back at the head of the queue with room."""
        if any(j.requested == "pause" and j.preempted_by == job.job_id for j in running):
            return []  # already making room
        victims = preemption_victims(job, running, self.devices, self.supervisor.running)
        for victim in victims:
            self.store.update(victim.job_id, requested="pause", preempted_by=job.job_id)
            log.info("job %s paused to make room for %s (preempt)", victim.job_id, job.job_id)
        return [victim.job_id for victim in victims]

    def _finish(self, finished: TrainerExit, now: float) -> None:
        job = self.store.get(finished.job_id)
        paths = self.workspace.job_paths(job.job_id)
        latest = paths.latest_checkpoint()
        progress = {**job.progress, **{k: v for k, v in (finished.progress or {}).items()
                                       if k in ("step", "total_steps", "loss") and v is not None}}
        attempts = list(job.attempts)
        if attempts:
            attempts[-1] = {**attempts[-1], "finished_at": now, "status": str(finished.status),
                            "exit_code": finished.exit_code, "error": finished.error}
        fields = dict(exit_code=finished.exit_code, error=finished.error, progress=progress,
                      attempts=attempts, last_checkpoint=latest.name if latest else None,
                      resume_from=None)
        changes = (finished.progress or {}).get("microbatch_changes") or []
        if changes:
            # It trains on with the smaller micro-batch: a resume must continue with it.
            fields.update(microbatch_changes=changes, config=job.config.replace(**changes[-1]["to"]))
        try:
            job = change_status(self.store, job.job_id, finished.status, self.listeners, now, **fields)
        except IllegalTransition:
            log.exception("job %s: cannot record exit %s", job.job_id, finished)
            self.devices.release(finished.job_id)
            return
        self.devices.release(finished.job_id)  # once recorded: until then the job still holds them
        log.info("job %s %s (exit %s)", job.job_id, job.status, finished.exit_code)
        if job.status == JobStatus.PAUSED and job.preempted_by:
            change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, now,
                          resume_from=latest.name if latest else None, preempted_by=None)
            log.info("job %s re-queued after preemption by %s", job.job_id, job.preempted_by)
            return
        self._maybe_retry(job, now)

    def _maybe_retry(self, job: Job, now: float) -> None:
        retries = job.config.max_retries
        crashed = job.status == JobStatus.FAILED and job.exit_code != EXIT_INVALID
        if not crashed or job.attempt > retries:
            return
        checkpoint = self.workspace.job_paths(job.job_id).latest_checkpoint()
        change_status(self.store, job.job_id, JobStatus.QUEUED, self.listeners, now,
                      resume_from=checkpoint.name if checkpoint else None,
                      error=None)
        log.info("job %s re-queued (retry %d of %d)", job.job_id, job.attempt, retries)

    # ---- thread ---------------------------------------------------------------------------------

    def wake(self) -> None:
        """Run a round now (after a submit or a request) instead of at the next tick."""
        self._wake.set()

    def start(self, on_error: Callable[[Exception], None] | None = None) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                failed = False
                try:
                    self.step()
                except Exception as exc:  # one bad round must not stop the queue
                    failed = True
                    log.exception("scheduler round failed")
                    if on_error:
                        on_error(exc)
                self.cpu_seconds = time.thread_time()  # this thread's own CPU, for /health
                # Trainers to follow or jobs waiting (devices held from outside, say): look every
                # tick. Otherwise sleep until an action (submit, resume, cancel, ...) wakes the
                # scheduler: an idle console stays idle.
                watching = failed or bool(self.supervisor.running or self.unrecorded or self.waiting)
                self._wake.wait(self.tick_s if watching else None)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
