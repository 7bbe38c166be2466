"""What changed, for the live views: a version per key ("job:<id>", "system", a view's own key)
that the engine bumps from its threads when something a view shows changed, and that a view's
stream awaits instead of asking on a timer. A waiting stream holds no thread: it awaits a future
on its own event loop, which a bump resolves from whichever thread made it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Changes:
    def __init__(self):
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions.get(key, 0)

    def versions(self, keys: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {key: self._versions.get(key, 0) for key in keys}

    def bump(self, *keys: str) -> None:
        woken = []
        with self._lock:
            for key in keys:
                self._versions[key] = self._versions.get(key, 0) + 1
                woken.extend(self._waiters.pop(key, ()))
        for loop, future in woken:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop has closed: nobody waits there any more

    async def wait(self, seen: dict[str, int], timeout: float) -> bool:
        """Until a key of `seen` moves past the version seen (True) or `timeout` passes (False)."""
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            if any(self._versions.get(key, 0) != version for key, version in seen.items()):
                return True
            for key in seen:
                self._waiters.setdefault(key, set()).add(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                for key in seen:
                    waiters = self._waiters.get(key)
                    if waiters is not None:
                        waiters.discard(entry)
                        if not waiters:
                            del self._waiters[key]
