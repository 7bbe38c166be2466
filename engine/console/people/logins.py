"""Throttling of failed logins, per user name and per client address.

The first few failures (FREE_FAILURES) cost nothing; each further one doubles the wait before the
next try (1 s, 2 s, 4 s, ... up to MAX_WAIT_S), so guessing a password takes years while a person
who mistypes a few times never notices. A success clears the name's count; an address keeps its
count (one address trying many names is guessing). Counts fade after QUIET_RESET_S without failures.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

FREE_FAILURES = {"name": 5, "address": 20}  # an address may be a whole office, or the share tunnel
MAX_WAIT_S = 900.0
QUIET_RESET_S = 3600.0
MAX_TRACKED = 10_000  # names and addresses remembered at once: random names cannot fill memory


class LoginThrottle:
    def __init__(self) -> None:
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait_s(self, name: str, address: str, now: float | None = None) -> float:
        """Seconds before this name or address may try again (0: now)."""
        now = time.time() if now is None else now
        with self._lock:
            return max(self._wait(("name", name), now), self._wait(("address", address), now))

    def _wait(self, key: tuple[str, str], now: float) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        free = FREE_FAILURES[key[0]]
        if count < free or now - last > QUIET_RESET_S:
            return 0.0
        delay = min(2.0 ** (count - free), MAX_WAIT_S)
        return max(0.0, last + delay - now)

    def failed(self, name: str, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            for key in (("name", name), ("address", address)):
                count, last = self._failures.pop(key, (0, 0.0))
                if now - last > QUIET_RESET_S:
                    count = 0
                self._failures[key] = (count + 1, now)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("name", name), None)

    def message(self, name: str, address: str, wait: float) -> str:
        return (f"too many failed logins for {name!r} or from {address}; try again in "
                f"{max(1, round(wait))} s")
