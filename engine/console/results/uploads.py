"""Uploaded datasets: one stored copy per user and content, moved (not copied) out of the web
server's temporary folder, hashed as a stream, within the user's quota, and removed once no job
uses it (a day after its last upload; a timer of the console's own looks every hour)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError
from engine.console.people.users import user_folder_name
from engine.sources import DATASET_SUFFIXES

log = logging.getLogger("traindeck.uploads")
BLOCK = 4 << 20
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRefused(ConfigError):
    pass


@dataclass(frozen=True)
class Retention:
    """How long an upload no job names is kept (time to submit it after uploading), and how
    often the console looks for such uploads."""
    max_age_s: float = 24 * 3600
    check_every_s: float = 3600


def safe_file_name(name: str) -> str:
    stem, suffix = os.path.splitext(os.path.basename(name or ""))
    stem = SAFE_NAME.sub("_", stem).strip("._")[:80] or "dataset"
    return stem + suffix.lower()


class Uploads:
    def __init__(self, root: Path):
        self.root = root

    def folder(self, user: str) -> Path:
        return self.root / user_folder_name(user)

    def used_bytes(self, user: str) -> int:
        folder = self.folder(user)
        if not folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def store(self, user: str, source: Path, original_name: str, quota_bytes: int | None,
              max_file_bytes: int | None = None) -> Path:
        """Move `source` (a temporary upload) into the user's folder; the temporary file is gone
        afterwards whatever the outcome. Returns the stored path."""
        try:
            return self._store(user, source, original_name, quota_bytes, max_file_bytes)
        finally:
            source.unlink(missing_ok=True)

    def _store(self, user: str, source: Path, original_name: str, quota_bytes: int | None,
               max_file_bytes: int | None) -> Path:
        name = safe_file_name(original_name)
        if not name.endswith(DATASET_SUFFIXES):
            raise UploadRefused(f"upload {name}: a dataset must be one of "
                                f"{', '.join(DATASET_SUFFIXES)}")
        size = source.stat().st_size
        if max_file_bytes is not None and size > max_file_bytes:
            raise UploadRefused(f"upload {name}: {size / 2**20:.0f} MiB is over the console's "
                                f"limit of {max_file_bytes / 2**20:.0f} MiB per file")
        digest = hashlib.sha256()
        with open(source, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
        folder = self.folder(user)
        target = folder / f"{digest.hexdigest()[:12]}-{name}"
        if target.exists():
            os.utime(target)  # the same content again: one copy, freshly used
            return target
        used = self.used_bytes(user)
        if quota_bytes is not None and used + size > quota_bytes:
            raise UploadRefused(
                f"quota max_upload_mb: {user} stores {used / 2**20:.0f} MiB of uploads and this "
                f"file is {size / 2**20:.0f} MiB (quota {quota_bytes / 2**20:.0f} MiB); delete "
                f"jobs that use old uploads, or ask an admin for more")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        try:
            try:
                os.replace(source, tmp)  # same file system: a rename, no copy at all
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                with open(source, "rb") as f, open(tmp, "wb") as out:
                    shutil.copyfileobj(f, out, BLOCK)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def clean(self, in_use: set[Path], max_age_s: float, now: float | None = None) -> list[Path]:
        """Remove the stored files not in `in_use` (resolved paths) that were last uploaded more
        than `max_age_s` ago. Returns what was removed."""
        now = time.time() if now is None else now
        removed = []
        if not self.root.is_dir():
            return removed
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in folder.iterdir():
                if not path.is_file() or path.is_symlink() or path.resolve() in in_use:
                    continue
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed


class CleanupTimer:
    """Runs `clean` at start and then every `every_s` seconds on a thread of its own, until
    stopped. Not the scheduler's round: the scheduler sleeps while the queue is idle, and an idle
    console must still remove old uploads."""

    def __init__(self, clean: Callable[[], object], every_s: float):
        self.clean, self.every_s = clean, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="upload retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                self.clean()
            except Exception:  # a failed round (a file in use on a network disk) is retried
                log.exception("removing unused uploads failed")
            if self._stop.wait(self.every_s):
                return
