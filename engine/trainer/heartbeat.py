"""The trainer's heartbeat file (kept free of heavy imports: the trainer starts it first)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from engine.atomic import write_json_atomic


class Heartbeat:
    """`heartbeat.json`: time, phase, step. The supervisor kills a trainer whose beat is older
    than the job's timeout.

    During set-up (loading, tokenizing) a thread beats, since those phases have no step events.
    From the first training step on, only the training loop beats, so a hung loop (deadlock,
    stuck I/O) stops the beat even though the process is alive.
    """

    THREAD_INTERVAL_S = 2.0
    MIN_INTERVAL_S = 0.5  # the loop beats at most this often: a file write per step is waste

    def __init__(self, path: Path | None):
        self.path = path
        self.phase = "starting"
        self.step = 0
        self.total_steps: int | None = None
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the set-up thread and the training loop both beat

    def beat(self, force: bool = False, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self, key, value)
        if self.path is None:  # a DDP rank other than 0: rank 0 beats for the job
            return
        now = time.time()
        if not force and now - self._last < self.MIN_INTERVAL_S:
            return
        with self._lock:
            self._last = now
            try:
                # Rewritten every half second: not fsynced (a crash may lose a beat, never tear
                # one).
                write_json_atomic(self.path, {"time": now, "pid": os.getpid(), "phase": self.phase,
                                              "step": self.step, "total_steps": self.total_steps},
                                  durable=False)
            except OSError as exc:  # a full disk must not kill training; a stale beat will tell
                print(f"warning: cannot write {self.path.name}: {exc}", flush=True)

    def start_background(self, phase: str) -> None:
        self.beat(force=True, phase=phase)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.THREAD_INTERVAL_S):
            self.beat(force=True)
