"""Write a file so that a reader (or a crash at any moment) sees the old content or the new, never
a torn one: write a temp file beside it, fsync, rename over, fsync the folder."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: str | bytes, durable: bool = True, mode: int = 0o644) -> None:
    """`durable=False` skips the fsyncs, for files that are rewritten every second (heartbeats):
    a crash may then lose the latest version, never leave a torn one."""
    # Unique per process and thread: two threads of one trainer may write the same file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    write_atomic(path, json.dumps(data), durable)


def fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fresh_folder(destination: Path) -> Path:
    """An empty temporary folder beside `destination`, to build it in and `publish_folder`."""
    tmp = destination.with_name(f".{destination.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_folder(tmp: Path, destination: Path) -> None:
    """Put a folder built aside in place of `destination`: readers see the old one or the new
    one, never half of it."""
    shutil.rmtree(destination, ignore_errors=True)
    tmp.rename(destination)
