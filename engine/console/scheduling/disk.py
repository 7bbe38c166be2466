"""The workspace's disk as part of the console's state: how much is free, the floor below which
no job starts, and whether anything can be recorded at all.

The disk is looked at at most once every CHECK_INTERVAL_S (one statvfs), however often the
scheduler, /health or the UI's banner ask: asking costs nothing per request.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.console.records.job import Job
from engine.console.records.workspace import Workspace
from engine.jobfiles import checkpoint_step

GIB = 2**30
MIN_FLOOR_BYTES = GIB
# Below this nothing can be counted on to be written: the job database, a checkpoint, a log line
# (the supervisor takes a trainer that died with this little left to have died of a full disk).
FULL_BYTES = 16 << 20
CHECK_INTERVAL_S = 2.0


def folder_size(folder: Path) -> int:
    """Bytes in the files under `folder` (0 if it went away meanwhile: a rotated checkpoint)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def size_text(size: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} bytes"


def running_checkpoints(trainers: dict) -> Iterator[Path | None]:
    """Where new checkpoints appear: each running trainer's latest complete one."""
    for trainer in list(trainers.values()):
        yield trainer.paths.latest_checkpoint()


def recorded_checkpoints(workspace: Workspace, jobs: Iterable[Job]) -> Iterator[Path]:
    """The last checkpoint each job recorded (a plain folder name, never a path elsewhere)."""
    for job in jobs:
        name = job.last_checkpoint
        if checkpoint_step(name) is not None:
            yield workspace.job_paths(job.job_id).root / name


@dataclass(frozen=True)
class DiskState:
    path: str
    free_bytes: int
    total_bytes: int
    floor_bytes: int
    floor_configured: bool  # set with --disk-floor-gb (else: 1 GiB or twice the largest checkpoint)

    @property
    def full(self) -> bool:
        return self.free_bytes < FULL_BYTES

    @property
    def low(self) -> bool:
        return self.free_bytes < self.floor_bytes

    def hold_reason(self) -> str | None:
        """Why no job may start now (None: they may)."""
        if self.full:
            return (f"held back: the workspace's disk is full ({size_text(self.free_bytes)} "
                    f"free); it starts once there is room")
        if self.low:
            return (f"held back: the workspace's disk has {size_text(self.free_bytes)} free, "
                    f"below the floor of {size_text(self.floor_bytes)}; it starts once there "
                    f"is room")
        return None


class DiskWatch:
    """The disk that holds `path`, looked at no more often than `interval_s`.

    `floor_bytes`: no job starts with less free (None: the larger of 1 GiB and twice the largest
    checkpoint seen so far, since the next job's first checkpoint must fit).
    """

    def __init__(self, path: Path, floor_bytes: int | None = None,
                 interval_s: float = CHECK_INTERVAL_S,
                 checkpoints: Callable[[], Iterable[Path | None]] = lambda: (),
                 usage: Callable[[str], tuple] = shutil.disk_usage):
        self.path = Path(path)
        self.configured_floor = floor_bytes
        self.interval_s = interval_s
        self.checkpoints = checkpoints  # where new checkpoints appear (the running jobs' latest)
        self.usage = usage
        self.largest_checkpoint = 0
        self._sized: set[Path] = set()
        self._state: DiskState | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def floor_bytes(self) -> int:
        if self.configured_floor is not None:
            return self.configured_floor
        return max(MIN_FLOOR_BYTES, 2 * self.largest_checkpoint)

    def note_checkpoints(self, folders: Iterable[Path | None]) -> None:
        """Size the checkpoints not seen before (a complete checkpoint no longer changes)."""
        for folder in folders:
            if folder is not None and folder not in self._sized:
                self._sized.add(folder)
                self.largest_checkpoint = max(self.largest_checkpoint, folder_size(folder))

    def state(self, now: float | None = None) -> DiskState:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._state is None or now - self._checked_at >= self.interval_s:
                try:
                    self.note_checkpoints(self.checkpoints())
                except OSError:  # a job folder removed while listed: sized next time
                    pass
                total, _, free = self.usage(str(self.path))[:3]
                self._state = DiskState(str(self.path), free, total, self.floor_bytes(),
                                        self.configured_floor is not None)
                self._checked_at = now
            return self._state

    def hold_reason(self, now: float | None = None) -> str | None:
        return self.state(now).hold_reason()


def start_held_back(disk: DiskWatch | None, unrecorded: list) -> str | None:
    """Why no job may start now: the disk is below its floor, or the job database could not
    record a job's end (`unrecorded`); None: jobs may start."""
    held = disk.hold_reason() if disk else None
    if held is None and unrecorded:
        held = "held back: the job database cannot be written; it starts once it can"
    return held


def disk_report(state: DiskState, queued: int, unrecorded: list[str]) -> dict:
    """The disk as /health and the UI's banner show it: `message` says what is wrong, what is
    held back (the `queued` jobs) and what cannot be recorded (None when all is well)."""
    if state.full or unrecorded:
        level = "full"
    else:
        level = "low" if state.low else "ok"
    held_back = queued if level != "ok" else 0
    report = {"state": level, "workspace": state.path, "free_bytes": state.free_bytes,
              "total_bytes": state.total_bytes, "floor_bytes": state.floor_bytes,
              "held_back": held_back, "unrecorded": unrecorded, "message": None}
    if level == "ok":
        return report
    where = (f"{size_text(state.free_bytes)} free of {size_text(state.total_bytes)} "
             f"({state.path})")
    if level == "full":
        sentences = [f"The workspace's disk is full: {where}.",
                     "Nothing can be recorded: submits and changes to jobs are refused, and the "
                     "ends of jobs are written down once there is room."]
    else:
        how = ("--disk-floor-gb" if state.floor_configured else
               "the larger of 1 GiB and twice the largest checkpoint; --disk-floor-gb sets it")
        sentences = [f"The workspace's disk is low: {where}, below the floor of "
                     f"{size_text(state.floor_bytes)} ({how})."]
    if unrecorded:
        sentences.append(f"Ended but not recorded yet: {', '.join(unrecorded)}.")
    sentences.append(f"{held_back} queued job{'s' if held_back != 1 else ''} held back until "
                     f"there is room." if held_back else "No job starts until there is room.")
    report["message"] = " ".join(sentences + ["Free some space."])
    return report
