"""Job persistence behind one interface: `TinyDBJobStore` on disk, `MemoryJobStore` for fast tests.

Only the console's engine writes the database. Every write is atomic (temp file, fsync, rename,
fsync of the folder) and serialized by one lock, so a kill -9 at any moment leaves either the old
or the new database on disk, never a torn one, and every acknowledged write survives.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from engine.atomic import write_atomic
from engine.config import ConfigError, JobConfig, shorten
from engine.console.records.job import Job, field_problems, readable_record, record_problems
from engine.console.records.jsonsafe import unsafe_parts

log = logging.getLogger("traindeck.store")


class DatabaseDamaged(RuntimeError):
    """The job database cannot be read as it is; the message says how to rebuild it."""


class StorageError(ConfigError):
    """The database or a job folder could not be written (a full disk, say); nothing changed."""


class UnsafeValue(ValueError):
    """A value no JSON client could read back was about to be stored."""


class StoreLock:
    """The store's reentrant lock. Work handed to `after_release` (a status change's listeners:
    files, notifications) runs once the outermost holder lets go: a slow listener never stalls
    the other users' submits and lists, however deeply the change was nested."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # how often the holding thread entered; only the holder touches it
        self._deferred: list[Callable[[], None]] = []

    def __enter__(self) -> StoreLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._depth -= 1
        deferred: list[Callable[[], None]] = []
        if self._depth == 0:
            deferred, self._deferred = self._deferred, []
        self._lock.release()
        for work in deferred:
            try:  # each on its own: a failing listener must not drop the next, nor the caller's
                work()  # answer (the change it follows is already saved)
            except Exception:
                log.exception("work after a store change failed")

    def after_release(self, work: Callable[[], None]) -> None:
        """Run `work` as soon as this thread no longer holds the lock (now, if it does not)."""
        with self:
            self._deferred.append(work)


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


def storable(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as stored: a JobConfig becomes its dict; nothing a JSON client cannot read, and
    nothing the record's fields do not allow, passes."""
    fields = {k: (v.to_dict() if isinstance(v, JobConfig) else v) for k, v in fields.items()}
    problems = unsafe_parts(fields)
    if problems:
        raise UnsafeValue("refusing to store a value no client could read: "
                          + "; ".join(problems[:5]))
    problems = field_problems(fields)
    if problems:
        raise ValueError("refusing to store a job record with " + "; ".join(problems[:5]))
    return fields


class JobStore(ABC):
    """Jobs by id. Methods return copies: changing a returned Job changes nothing stored."""

    def __init__(self) -> None:
        self.lock = StoreLock()

    def lookup(self, job_id: Any) -> Job:
        """A job by an id a caller typed, checked before it is looked up."""
        if not isinstance(job_id, str) or not job_id.strip():
            raise ConfigError("job_id is required")
        if len(job_id) > 100:
            raise JobNotFound(shorten(job_id))
        return self.get(job_id.strip())

    @abstractmethod
    def add(self, job: Job) -> Job: ...

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def update(self, job_id: str, **fields: Any) -> Job: ...

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

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

    @abstractmethod
    def close(self) -> None:
        """Let go of what the store holds open (a file); the store is not used after."""


class MemoryJobStore(JobStore):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, dict[str, Any]] = {}

    def add(self, job: Job) -> Job:
        with self.lock:
            if job.job_id in self._jobs:
                raise ValueError(f"job {job.job_id} already exists")
            self._jobs[job.job_id] = clone(storable(job.to_dict()))
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
            self._jobs[job_id].update(clone(storable(fields)))
            return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self.lock:
            if self._jobs.pop(job_id, None) is None:
                raise JobNotFound(job_id)

    def _statuses(self) -> list[str]:
        return [d["status"] for d in self._jobs.values()]

    def all(self, statuses: tuple[str, ...] | None = None, copy: bool = True) -> list[Job]:
        with self.lock:
            return [Job.from_dict(clone(d) if copy else d) for d in self._jobs.values()
                    if statuses is None or d["status"] in statuses]

    def close(self) -> None:
        """Nothing to let go of: the jobs live in this object."""


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on each write.

    It keeps the last written data in memory, so reads cost no disk I/O; that is safe because the
    workspace lock guarantees one writer process.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)  # a write interrupted before its rename
        self._data = self._load()

    def _load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            raise self._damaged("is not UTF-8 text") from None
        if not text.strip():
            raise self._damaged("is empty")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise self._damaged(f"is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise self._damaged("does not hold a table of jobs")
        return data

    def _damaged(self, problem: str) -> DatabaseDamaged:
        # Starting over an unreadable database would write an empty one over the history.
        return DatabaseDamaged(
            f"job database {self.path} {problem}; the console will not start over it (that would "
            f"lose every job's record). Rebuild it from the job folders with `python app.py "
            f"repair-db --workspace {self.path.parent}` (the damaged file is kept beside it).")

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        try:
            write_atomic(self.path, json.dumps(data, separators=(",", ":")))
        except BaseException:
            # TinyDB changed our cached dict in place before calling write: forget that change.
            self._data = self._load()
            raise
        self._data = data

    def close(self) -> None:
        pass


class TinyDBJobStore(JobStore):
    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._jobs = self._db.table("jobs", cache_size=0)
        self._doc_ids: dict[str, int] = {}
        self._damaged: dict[int, list[str]] = {}  # doc id -> problems, for records read made safe
        for doc in self._jobs.all():
            problems = record_problems(dict(doc))
            if any(p.startswith(("job_id:", "not an object")) for p in problems):
                # Kept on disk untouched (repair-db can look at it), but nothing can address it.
                log.error("job database: record %s is unusable (%s); ignored", doc.doc_id,
                          "; ".join(problems))
                continue
            if problems:
                log.error("job %s: damaged record (%s); shown made safe, never started",
                          doc["job_id"], "; ".join(problems))
                self._damaged[doc.doc_id] = problems
            self._doc_ids[doc["job_id"]] = doc.doc_id

    def _job(self, doc: Document, copy: bool = True) -> Job:
        problems = self._damaged.get(doc.doc_id)
        if problems:
            return Job.from_dict(readable_record(dict(doc), problems))
        return Job.from_dict(clone(dict(doc)) if copy else doc)

    def add(self, job: Job) -> Job:
        with self.lock:
            if job.job_id in self._doc_ids:
                raise ValueError(f"job {job.job_id} already exists")
            self._doc_ids[job.job_id] = self._jobs.insert(clone(storable(job.to_dict())))
            return self.get(job.job_id)

    def get(self, job_id: str) -> Job:
        with self.lock:
            doc = self._jobs.get(doc_id=self._doc_ids.get(job_id, -1))
            if doc is None:
                raise JobNotFound(job_id)
            return self._job(doc)

    def update(self, job_id: str, **fields: Any) -> Job:
        with self.lock:
            if job_id not in self._doc_ids:
                raise JobNotFound(job_id)
            doc_id = self._doc_ids[job_id]
            self._jobs.update(clone(storable(fields)), doc_ids=[doc_id])
            if doc_id in self._damaged:
                problems = record_problems(dict(self._jobs.get(doc_id=doc_id)))
                if problems:
                    self._damaged[doc_id] = problems
                else:
                    del self._damaged[doc_id]
            return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self.lock:
            if job_id not in self._doc_ids:
                raise JobNotFound(job_id)
            doc_id = self._doc_ids.pop(job_id)
            self._jobs.remove(doc_ids=[doc_id])
            self._damaged.pop(doc_id, None)

    def _docs(self) -> list:
        docs = self._jobs.all()
        if len(docs) == len(self._doc_ids):
            return docs
        known = set(self._doc_ids.values())  # skip unusable records
        return [doc for doc in docs if doc.doc_id in known]

    def _status(self, doc: Document) -> str:
        return self._job(doc, copy=False).status if doc.doc_id in self._damaged else doc["status"]

    def _statuses(self) -> list[str]:
        return [self._status(doc) for doc in self._docs()]

    def all(self, statuses: tuple[str, ...] | None = None, copy: bool = True) -> list[Job]:
        with self.lock:
            # Filter on the stored status first: the scheduler asks for queued and running jobs
            # several times a second out of thousands.
            return [self._job(doc, copy) for doc in self._docs()
                    if statuses is None or self._status(doc) in statuses]

    def close(self) -> None:
        self._db.close()
