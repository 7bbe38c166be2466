"""Limits on heavy requests (generation, merged exports, dataset checks, zips): each runs at most
`per_user` at a time per user and `total` at a time in all, so one user cannot take the console's
CPU, memory or disk bandwidth from everyone else. Over a limit the request is refused at once with
a message, never queued behind an unknown wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.config import ConfigError


class Busy(ConfigError):
    pass


class Gate:
    def __init__(self, what: str, per_user: int = 1, total: int = 2):
        self.what = what  # "a generation", "an export", ...
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextmanager
    def slot(self, user: str) -> Iterator[None]:
        with self._lock:
            mine = self._running.get(user, 0)
            if mine >= self.per_user:
                raise Busy(f"busy: {user} already has {self.what} running (at most "
                           f"{self.per_user} at a time per user); try again when it ends")
            if sum(self._running.values()) >= self.total:
                raise Busy(f"busy: the console is running {self.total} of these already "
                           f"({self.what}); try again in a moment")
            self._running[user] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._running[user] -= 1
                if not self._running[user]:
                    del self._running[user]


class Gates:
    """One gate per kind of heavy request."""

    def __init__(self) -> None:
        self.generate = Gate("a generation", per_user=1, total=2)
        self.export = Gate("an export", per_user=1, total=1)
        self.check = Gate("a dataset check", per_user=1, total=4)
        self.download = Gate("a download being prepared", per_user=2, total=4)
        self.upload = Gate("an upload being stored", per_user=1, total=4)
