"""The workspace folder: the job database, one folder per job, caches and exports; and the lock that
lets only one console use it at a time."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from engine.jobfiles import JobPaths


class WorkspaceBusy(RuntimeError):
    pass


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self._lock_fd: int | None = None

    @property
    def database(self) -> Path:
        return self.root / "jobs.json"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    @property
    def lock_file(self) -> Path:
        return self.root / "console.lock"

    def job_paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.jobs_dir / job_id)

    def job_folders(self) -> list[Path]:
        """Folders under jobs/ that hold a job file (what repair-db can rebuild from)."""
        if not self.jobs_dir.is_dir():
            return []
        return sorted(p for p in self.jobs_dir.iterdir() if (p / "job.yaml").is_file())

    def create(self) -> None:
        for folder in (self.root, self.jobs_dir, self.cache_dir, self.exports_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> None:
        """Take the workspace, or raise WorkspaceBusy naming the process that holds it.

        An flock dies with its process, so a console killed with -9 never leaves a stale lock.
        """
        self.create()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkspaceBusy(f"workspace {self.root} is in use by another TrainDeck console "
                                f"(process {holder}); stop it or use another --workspace") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
