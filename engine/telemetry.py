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

try:
    import pynvml
except ImportError:
    pynvml = None


def gpu_stats() -> tuple[list[dict[str, Any]], str | None]:
    """(per-GPU readings, why there are none)."""
    if pynvml is None:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({exc}): no NVIDIA driver on this machine"
    gpus = []
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            reading = {
                "index": index,
                "name": name if isinstance(name, str) else name.decode(),
                "utilization_percent": float(util.gpu),
                "memory_used_mb": memory.used / 2**20,
                "memory_total_mb": memory.total / 2**20,
                "temperature_c": float(pynvml.nvmlDeviceGetTemperature(
                    handle, pynvml.NVML_TEMPERATURE_GPU)),
            }
            try:
                reading["power_w"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except pynvml.NVMLError:
                reading["power_w"] = None
            gpus.append(reading)
        except pynvml.NVMLError as exc:
            gpus.append({"index": index, "error": str(exc)})
    return gpus, None


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
