"""What this machine has (CPUs, GPUs through NVML), and the `auto` settings chosen from it.

Read through NVML rather than torch so the console process never creates a CUDA context: the GPUs
belong to the trainers.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from engine import nvml
from engine.capabilities import installed


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_total_mb: int
    compute_capability: tuple[int, int]

    @property
    def supports_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)  # Ampere and newer


@dataclass(frozen=True)
class Machine:
    cpu_count: int
    gpus: tuple[GPU, ...] = field(default_factory=tuple)

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return f"cpu ({self.cpu_count} cores)"
        names = ", ".join(f"{g.index}: {g.name}" for g in self.gpus)
        return f"cuda ({len(self.gpus)} GPU: {names})"

    def to_dict(self) -> dict:
        return {"cpu_count": self.cpu_count, "gpus": [asdict(g) for g in self.gpus]}


def usable_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def read_gpus() -> tuple[GPU, ...]:
    gpus = []
    for index in range(nvml.device_count()):
        info = nvml.describe(index)
        gpus.append(GPU(index, info["name"], info["memory_total_mb"], info["compute_capability"]))
    return tuple(gpus)


@lru_cache(maxsize=1)
def detect() -> Machine:
    return Machine(cpu_count=usable_cpu_count(), gpus=read_gpus())


# ---------------------------------------------------------------------------------------------
# `auto` choices. Each returns a concrete value and is recorded in the job, so a run is
# reproducible on another machine by copying its resolved config.


def auto_num_workers(machine: Machine, gpus_per_job: int = 1) -> int:
    """Data-loader worker processes.

    On a GPU, workers prepare batch N+1 while the GPU runs batch N (the predecessor lost 15-23x
    to 0 workers); keep one core per GPU for the training process itself, at most 8 each.
    On a CPU-only machine the training process already uses every core for compute, and our data
    is tokenized once up front, so extra worker processes only compete for the same cores.
    """
    if not machine.has_cuda:
        return 0
    per_job = machine.cpu_count // max(1, len(machine.gpus)) * max(1, gpus_per_job)
    return max(1, min(8, per_job - 1))


def auto_prefetch_factor(num_workers: int) -> int | None:
    """Two batches ahead per worker keeps the GPU fed; PyTorch refuses a factor with 0 workers."""
    return 2 if num_workers > 0 else None


def auto_precision(machine: Machine) -> str:
    if not machine.has_cuda:
        return "fp32"  # CPU bf16 autocast is slower than fp32 on most CPUs, and fp32 is exact
    return "bf16" if all(g.supports_bf16 for g in machine.gpus) else "fp16"


def auto_attention(machine: Machine) -> str:
    """FlashAttention-2 where the flash-attn package is installed and every GPU is Ampere or
    newer (what it supports); PyTorch's scaled-dot-product attention everywhere else."""
    gpus_fit = machine.has_cuda and all(g.compute_capability >= (8, 0) for g in machine.gpus)
    return "flash_attention_2" if gpus_fit and installed("flash_attn") else "sdpa"


def auto_optimizer(machine: Machine) -> str:
    """Fused AdamW updates all parameters in a few kernels instead of several per tensor, on CUDA
    and on the CPU alike (PyTorch >= 2.4); it is also what transformers picks by default."""
    return "adamw_torch_fused"
