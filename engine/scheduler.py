"""The scheduler: starts the next queued job (priority, then submit order) when a device is free,
and turns each trainer exit into the job's final status.

`step()` does exactly one round and takes the clock as an argument, so tests drive it directly;
the background thread only calls it in a loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from engine.jobfiles import EXIT_INVALID
from engine.job import IllegalTransition, Job, JobStatus, StatusListener, change_status
from engine.store import JobStore
from engine.supervisor import Supervisor, TrainerExit
from engine.workspace import Workspace

log = logging.getLogger("traindeck.scheduler")


def queue_order(jobs: list[Job]) -> list[Job]:
    """The order queued jobs will start in: higher priority first, then first submitted."""
    queued = [j for j in jobs if j.status == JobStatus.QUEUED]
    return sorted(queued, key=lambda j: (-j.priority, j.seq))


class DevicePool:
    """Which devices are free. Without GPUs the machine is one device (one job at a time)."""

    def __init__(self, gpu_indices: list[int]):
        self.gpu_indices = list(gpu_indices)
        self.slots = self.gpu_indices or [None]
        self.assigned: dict[str, list] = {}

    def free(self) -> list:
        taken = {slot for slots in self.assigned.values() for slot in slots}
        return [slot for slot in self.slots if slot not in taken]

    def take(self, job_id: str, count: int = 1) -> list | None:
        free = self.free()
        if len(free) < count:
            return None
        self.assigned[job_id] = free[:count]
        return self.assigned[job_id]

    def release(self, job_id: str) -> None:
        self.assigned.pop(job_id, None)


class Scheduler:
    def __init__(self, store: JobStore, supervisor: Supervisor, workspace: Workspace,
                 devices: DevicePool, listeners: list[StatusListener] | None = None):
        self.store = store
        self.supervisor = supervisor
        self.workspace = workspace
        self.devices = devices
        self.listeners = listeners if listeners is not None else []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.tick_s = 0.25

    # ---- one round ------------------------------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for finished in self.supervisor.poll(now):
            self._finish(finished, now)
        with self.store.lock:
            for job in queue_order(self.store.all()):
                if not self._start(job, now):
                    break  # the head of the queue waits for a device; nobody jumps it

    def _start(self, job: Job, now: float) -> bool:
        slots = self.devices.take(job.job_id, 1)
        if slots is None:
            return False
        env = {}
        if self.devices.gpu_indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(s) for s in slots)
        attempt = job.attempt + 1
        job = self.store.update(job.job_id, attempt=attempt)
        paths = self.workspace.job_paths(job.job_id)
        try:
            trainer = self.supervisor.launch(job, paths, env)
        except OSError as exc:
            self.devices.release(job.job_id)
            change_status(self.store, job.job_id, JobStatus.RUNNING, self.listeners, now)
            change_status(self.store, job.job_id, JobStatus.FAILED, self.listeners, now,
                          error=f"could not start the trainer: {exc}")
            return True
        record = {"attempt": attempt, "status": JobStatus.RUNNING.value, "started_at": now, "resume_from": job.resume_from,
                  "pid": trainer.pid, "devices": slots}
        change_status(self.store, job.job_id, JobStatus.RUNNING, self.listeners, now,
                      pid=trainer.pid, attempts=job.attempts + [record])
        log.info("started job %s (attempt %d, pid %d)", job.job_id, attempt, trainer.pid)
        return True

    def _finish(self, finished: TrainerExit, now: float) -> None:
        self.devices.release(finished.job_id)
        job = self.store.get(finished.job_id)
        paths = self.workspace.job_paths(job.job_id)
        latest = paths.latest_checkpoint()
        progress = {**job.progress, **{k: v for k, v in finished.progress.items()
                                       if k in ("step", "total_steps", "loss") and v is not None}}
        attempts = list(job.attempts)
        if attempts:
            attempts[-1] = {**attempts[-1], "finished_at": now, "status": str(finished.status),
                            "exit_code": finished.exit_code, "error": finished.error}
        fields = dict(exit_code=finished.exit_code, error=finished.error, progress=progress,
                      attempts=attempts, last_checkpoint=latest.name if latest else None,
                      resume_from=None)
        try:
            job = change_status(self.store, job.job_id, finished.status, self.listeners, now, **fields)
        except IllegalTransition:
            log.exception("job %s: cannot record exit %s", job.job_id, finished)
            return
        log.info("job %s %s (exit %s)", job.job_id, job.status, finished.exit_code)
        self._maybe_retry(job, now)

    def _maybe_retry(self, job: Job, now: float) -> None:
        retries = int(job.config.get("max_retries", 0))
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
                try:
                    self.step()
                except Exception as exc:  # one bad round must not stop the queue
                    log.exception("scheduler round failed")
                    if on_error:
                        on_error(exc)
                self._wake.wait(self.tick_s)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
