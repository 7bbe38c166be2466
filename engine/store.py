"""Job persistence behind one interface: `TinyDBJobStore` on disk, `MemoryJobStore` for fast tests.

Only the console's engine writes the database. Every write is atomic (temp file, fsync, rename,
fsync of the folder) and serialized by one lock, so a kill -9 at any moment leaves either the old
or the new database on disk, never a torn one, and every acknowledged write survives.
"""

from __future__ import annotations

import json
import marshal
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from engine.job import Job


def clone(data: Any) -> Any:
    """A deep copy of JSON-shaped data, four times faster than copy.deepcopy: the console lists
    every job several times a second, and a workspace holds thousands."""
    return marshal.loads(marshal.dumps(data))


class JobNotFound(KeyError):
    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job with id {self.job_id!r}"


class JobStore(ABC):
    """Jobs by id. Methods return copies: changing a returned Job changes nothing stored."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def add(self, job: Job) -> Job: ...

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def update(self, job_id: str, **fields: Any) -> Job: ...

    @abstractmethod
    def all(self, statuses: tuple[str, ...] | None = None, copy: bool = True) -> list[Job]:
        """Every job, or those in `statuses`. copy=False skips copying for callers that only
        read (the job list, asked for every few seconds): they must not change what they get."""

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for status in self._statuses():
                counts[status] = counts.get(status, 0) + 1
        return counts

    def _statuses(self) -> list[str]:
        return [job.status for job in self.all()]

    def next_seq(self) -> int:
        with self.lock:
            return max((job.seq for job in self.all()), default=0) + 1

    def close(self) -> None:
        pass


class MemoryJobStore(JobStore):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, dict[str, Any]] = {}

    def add(self, job: Job) -> Job:
        with self.lock:
            if job.job_id in self._jobs:
                raise ValueError(f"job {job.job_id} already exists")
            self._jobs[job.job_id] = clone(job.to_dict())
            return self.get(job.job_id)

    def get(self, job_id: str) -> Job:
        with self.lock:
            if job_id not in self._jobs:
                raise JobNotFound(job_id)
            return Job.from_dict(clone(self._jobs[job_id]))

    def update(self, job_id: str, **fields: Any) -> Job:
        with self.lock:
            if job_id not in self._jobs:
                raise JobNotFound(job_id)
            self._jobs[job_id].update(clone(fields))
            return self.get(job_id)

    def _statuses(self) -> list[str]:
        return [d["status"] for d in self._jobs.values()]

    def all(self, statuses: tuple[str, ...] | None = None, copy: bool = True) -> list[Job]:
        with self.lock:
            return [Job.from_dict(clone(d) if copy else d) for d in self._jobs.values()
                    if statuses is None or d["status"] in statuses]


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on each write.

    It keeps the last written data in memory, so reads cost no disk I/O; that is safe because the
    workspace lock guarantees one writer process.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.parent.glob(self.path.name + ".*.tmp"):
            leftover.unlink(missing_ok=True)  # a write interrupted before its rename
        self._data = self._load()

    def _load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"job database {self.path} is not valid JSON: {exc}") from exc

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, separators=(",", ":"))
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException:
            # TinyDB changed our cached dict in place before calling write: forget that change.
            tmp.unlink(missing_ok=True)
            self._data = self._load()
            raise
        self._data = data

    def close(self) -> None:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TinyDBJobStore(JobStore):
    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._jobs = self._db.table("jobs", cache_size=0)
        self._doc_ids = {doc["job_id"]: doc.doc_id for doc in self._jobs.all()}

    def add(self, job: Job) -> Job:
        with self.lock:
            if job.job_id in self._doc_ids:
                raise ValueError(f"job {job.job_id} already exists")
            self._doc_ids[job.job_id] = self._jobs.insert(clone(job.to_dict()))
            return self.get(job.job_id)

    def get(self, job_id: str) -> Job:
        with self.lock:
            doc = self._jobs.get(doc_id=self._doc_ids.get(job_id, -1))
            if doc is None:
                raise JobNotFound(job_id)
            return Job.from_dict(clone(dict(doc)))

    def update(self, job_id: str, **fields: Any) -> Job:
        with self.lock:
            if job_id not in self._doc_ids:
                raise JobNotFound(job_id)
            self._jobs.update(clone(fields), doc_ids=[self._doc_ids[job_id]])
            return self.get(job_id)

    def _statuses(self) -> list[str]:
        return [doc["status"] for doc in self._jobs.all()]

    def all(self, statuses: tuple[str, ...] | None = None, copy: bool = True) -> list[Job]:
        with self.lock:
            return [Job.from_dict(clone(dict(doc)) if copy else doc) for doc in self._jobs.all()
                    if statuses is None or doc["status"] in statuses]

    def close(self) -> None:
        self._db.close()
