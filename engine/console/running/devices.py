"""Which devices are free, and which job holds which."""

from __future__ import annotations


class DevicePool:
    """Which devices are free. Without GPUs the machine is one device (one job at a time), and a
    job asking for N GPUs there runs N processes on the CPU (the same DDP path, on gloo)."""

    def __init__(self, gpu_indices: list[int]):
        self.gpu_indices = list(gpu_indices)
        self.slots = self.gpu_indices or [None]
        self.assigned: dict[str, list] = {}
        self.counts_gpus = bool(self.gpu_indices)  # whether jobs' GPUs count against quotas
        self.spans_nodes = False  # whether a job may ask for several machines

    @property
    def capacity(self) -> float:
        return len(self.gpu_indices) if self.gpu_indices else float("inf")

    def describe_capacity(self) -> str:
        count = len(self.gpu_indices)
        return f"{count} GPU{'s' if count != 1 else ''} ({', '.join(map(str, self.gpu_indices))})"

    def in_use(self, job_ids: set[str]) -> int:
        """GPUs held by these jobs (0 on a CPU-only machine)."""
        return sum(len(self.assigned.get(j, [])) for j in job_ids) if self.gpu_indices else 0

    def free(self) -> list:
        taken = {slot for slots in self.assigned.values() for slot in slots}
        return [slot for slot in self.slots if slot not in taken]

    def take(self, job_id: str, count: int = 1) -> list | None:
        free = self.free()
        if not self.gpu_indices:
            count = 1  # the CPU is one device, whatever the job's process count
        if len(free) < count:
            return None
        self.assigned[job_id] = free[:count]
        return self.assigned[job_id]

    def release(self, job_id: str) -> None:
        self.assigned.pop(job_id, None)


class ClusterDevices(DevicePool):
    """No slots to hand out (the cluster places jobs), but GPUs still count for quotas."""

    def __init__(self):
        super().__init__([])
        self.gpus_held: dict[str, int] = {}
        self.counts_gpus = True
        self.spans_nodes = True

    @property
    def capacity(self) -> float:
        return float("inf")

    def describe_capacity(self) -> str:
        return "the cluster's GPUs"

    def in_use(self, job_ids: set[str]) -> int:
        return sum(self.gpus_held.get(j, 0) for j in job_ids)

    def take(self, job_id: str, count: int = 1) -> list | None:
        self.gpus_held[job_id] = count
        self.assigned[job_id] = []
        return []

    def release(self, job_id: str) -> None:
        self.gpus_held.pop(job_id, None)
        self.assigned.pop(job_id, None)
