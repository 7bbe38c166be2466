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

from engine.console.records.job import JobStatus, StatusListener
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.running.devices import DevicePool
from engine.console.running.following import TrainerExit
from engine.console.running.launcher import Launcher
from engine.console.running.supervisor import Supervisor
from engine.console.scheduling.disk import DiskWatch, start_held_back
from engine.console.scheduling.outcomes import ExitRecorder
from engine.console.scheduling.planner import Planner

log = logging.getLogger("traindeck.scheduler")


class Scheduler:
    def __init__(self, store: JobStore, supervisor: Supervisor, workspace: Workspace,
                 devices: DevicePool, listeners: list[StatusListener] | None = None,
                 quotas_of: Callable[[str], dict[str, int | None]] | None = None,
                 disk: DiskWatch | None = None):
        self.store = store
        self.disk = disk  # below its floor no job starts
        self.waiting: dict[str, str] = {}  # queued job -> why it cannot start yet
        self.supervisor = supervisor
        # Exits the database could not record yet (a full disk): retried every round, so a job
        # never stays "running" after its trainer ended.
        self.unrecorded: list[TrainerExit] = []
        listeners = listeners if listeners is not None else []
        self.planner = Planner(store, supervisor, devices, quotas_of or (lambda owner: {}))
        self.launcher = Launcher(store, supervisor, workspace, devices, listeners)
        self.exits = ExitRecorder(store, workspace, devices, listeners)
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
                self.exits.record(finished, now)
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
            plan = self.planner.plan(now)
            self.waiting = plan.waiting
        self.launcher.start(plan.claims, now)
        for claim in plan.claims:
            self.waiting.pop(claim.job_id, None)  # running now, or withdrawn
        for victim in plan.victims:
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
                watching = failed or bool(self.supervisor.running or self.unrecorded
                                          or self.waiting)
                self._wake.wait(self.tick_s if watching else None)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
