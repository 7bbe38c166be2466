"""Uploaded datasets: one stored copy per user and content, moved (not copied) out of the web
server's temporary folder, hashed as a stream, within the user's quota, and removed once no job
uses it."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from engine.config import ConfigError
from engine.console.people.users import user_folder_name
from engine.sources import DATASET_SUFFIXES

BLOCK = 4 << 20
UNUSED_MAX_AGE_S = 24 * 3600  # an upload no job names is kept this long (time to submit it)
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadRefused(ConfigError):
    pass


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

    def clean(self, in_use: set[str], now: float | None = None) -> list[Path]:
        """Remove uploads that no job names and that were not used for a day."""
        now = time.time() if now is None else now
        removed = []
        if not self.root.is_dir():
            return removed
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if str(path) in in_use or not path.is_file():
                    continue
                if now - path.stat().st_mtime > UNUSED_MAX_AGE_S:
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed
