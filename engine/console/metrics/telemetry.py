"""Machine telemetry for the System tab and /system_stats: CPU, memory, disk, and per-GPU
utilization, memory, temperature and power through NVML. Degrades to CPU-only figures when there
is no GPU or no NVML."""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from engine import nvml


def gpu_stats() -> tuple[list[dict[str, Any]], str | None]:
    """(per-GPU readings, why there are none)."""
    return nvml.readings(), nvml.why_unavailable()


def system_stats(disk_path: Path | str = "/") -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(disk_path))
    gpus, gpu_note = gpu_stats()
    return {
        "time": time.time(),
        "cpu_percent": psutil.cpu_percent(None),
        "cpu_count": psutil.cpu_count(),
        "load_average": list(psutil.getloadavg()),
        "memory_used_mb": (memory.total - memory.available) / 2**20,
        "memory_total_mb": memory.total / 2**20,
        "memory_percent": memory.percent,
        "disk_used_gb": disk.used / 2**30,
        "disk_total_gb": disk.total / 2**30,
        "disk_percent": disk.percent,
        "gpus": gpus,
        "gpu_note": gpu_note,
    }


class SystemHistory:
    """Machine telemetry kept while someone looks: a sample is taken when asked for (at most one
    every `interval_s`), so an unwatched console samples nothing."""

    def __init__(self, disk_path: Path, interval_s: float = 2.0, keep: int = 900):
        self.disk_path = disk_path
        self.interval_s = interval_s
        self.samples: collections.deque = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def latest(self) -> dict[str, Any]:
        with self._lock:
            if not self.samples or time.time() - self.samples[-1]["time"] >= self.interval_s:
                self.samples.append(system_stats(self.disk_path))
            return self.samples[-1]

    def start(self) -> None:
        self.latest()  # the first sample primes psutil's CPU counter

    def stop(self) -> None:
        pass
