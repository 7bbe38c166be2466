"""Every job's metrics as the views read them: a running job's from the log its trainer is being
followed with, a finished job's parsed once and kept for the most recent few, so the polled
views never re-read a whole metrics file."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from engine.console.metrics.log import MetricsLog

METRICS_CACHE_SIZE = 32  # finished jobs whose metrics stay parsed in memory


class MetricsCache:
    def __init__(self, live: Callable[[str], MetricsLog | None], path_of: Callable[[str], Path],
                 size: int = METRICS_CACHE_SIZE):
        self.live = live  # a running job's log, kept by whoever follows its trainer
        self.path_of = path_of  # a job's metrics.jsonl
        self.size = size
        self._cached: OrderedDict[str, MetricsLog] = OrderedDict()

    def get(self, job_id: str) -> MetricsLog:
        live = self.live(job_id)
        if live is not None:
            live.refresh()  # a stat() when nothing is new; spares the caller the supervisor's tick
            return live
        cached = self._cached.pop(job_id, None)
        if cached is None:
            cached = MetricsLog(self.path_of(job_id))
        cached.refresh()
        self._cached[job_id] = cached
        while len(self._cached) > self.size:
            self._cached.popitem(last=False)
        return cached

    def forget(self, job_id: str) -> None:
        self._cached.pop(job_id, None)
