"""The one reader of NVIDIA's management library (NVML): which GPUs this machine has and how each
is doing. NVML, not torch, so that reading never creates a CUDA context (the GPUs belong to the
trainers). Without a driver, or without nvidia-ml-py, every reader answers "no GPUs" and says why.
"""

from __future__ import annotations

import threading
from typing import Any

try:
    import pynvml
except ImportError:  # a dependency, but a broken install must not stop the console or a trainer
    pynvml = None

_lock = threading.Lock()
_ready: bool | None = None
_why_not: str | None = None


def available() -> bool:
    """Initialise NVML once per process; False (with `why_unavailable()`) when it cannot be."""
    global _ready, _why_not
    with _lock:
        if _ready is None:
            if pynvml is None:
                _ready, _why_not = False, "nvidia-ml-py is not installed"
            else:
                try:
                    pynvml.nvmlInit()
                    _ready = True
                except pynvml.NVMLError as exc:
                    _ready, _why_not = False, f"NVML unavailable ({exc}): no NVIDIA driver here"
        return _ready


def why_unavailable() -> str | None:
    return None if available() else _why_not


def device_count() -> int:
    return pynvml.nvmlDeviceGetCount() if available() else 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else value.decode()


def describe(index: int) -> dict[str, Any]:
    """Name, total memory and compute capability of GPU `index` (NVML's numbering)."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        capability = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    except pynvml.NVMLError:
        capability = (0, 0)
    return {"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
            "memory_total_mb": pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
            "compute_capability": capability}


def reading(index: int) -> dict[str, Any]:
    """Utilization, memory, temperature and power of GPU `index` now; {"index", "error"} when
    the device does not answer."""
    if not available():
        return {"index": index, "error": why_unavailable()}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        values = {
            "index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
            "utilization_percent": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "memory_used_mb": memory.used / 2**20, "memory_total_mb": memory.total / 2**20,
            "temperature_c": float(pynvml.nvmlDeviceGetTemperature(
                handle, pynvml.NVML_TEMPERATURE_GPU)),
        }
    except pynvml.NVMLError as exc:
        return {"index": index, "error": str(exc)}
    try:
        values["power_w"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    except pynvml.NVMLError:
        values["power_w"] = None
    return values


def readings() -> list[dict[str, Any]]:
    return [reading(index) for index in range(device_count())]
