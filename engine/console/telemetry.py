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
    """Samples system_stats every few seconds into a ring buffer for the System tab's charts."""

    def __init__(self, disk_path: Path, interval_s: float = 2.0, keep: int = 900):
        self.disk_path = disk_path
        self.interval_s = interval_s
        self.samples: collections.deque = collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> dict[str, Any]:
        return self.samples[-1] if self.samples else self.sample()

    def sample(self) -> dict[str, Any]:
        stats = system_stats(self.disk_path)
        self.samples.append(stats)
        return stats

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, name="system-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
