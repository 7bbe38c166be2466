"""Run analytics computed from a job's metric records: rates, ETA, best (eval) loss, trend."""

from __future__ import annotations

import statistics
import time
from typing import Any

WARMUP_FRACTION = 0.1  # the first 10% of logged steps (compilation, caches, allocator) are skipped
RATE_KEYS = ("samples_per_s", "tokens_per_s")


class RunningStats:
    """What the analytics need of a run's records, kept up to date one record at a time (prefix
    sums, running extremes), so analysing a 100,000-step run costs what a 10-step one does."""

    def __init__(self, records: list[dict[str, Any]] = ()):
        self.rate_sums = {key: [0.0] for key in RATE_KEYS}  # [k]: sum over records[:k]
        self.rate_counts = {key: [0] for key in RATE_KEYS}
        self.loss_sums = [0.0]  # [k]: sum of the first k losses
        self.losses = 0
        self.first_loss = self.last_loss = self.best_loss = None
        self.best_step = None
        self.peaks = {"gpu_mem_peak_mb": 0.0, "rss_mb": 0.0}
        self.evaluations = 0
        self.last_eval_loss = self.best_eval_loss = self.best_eval_step = None
        for record in records:
            self.add(record)

    def add_evaluation(self, record: dict[str, Any]) -> None:
        loss = record.get("eval_loss")
        if not isinstance(loss, (int, float)):
            return
        self.evaluations += 1
        self.last_eval_loss = loss
        if self.best_eval_loss is None or loss < self.best_eval_loss:
            self.best_eval_loss, self.best_eval_step = loss, record["step"]

    def add(self, record: dict[str, Any]) -> None:
        for key in RATE_KEYS:
            value = record.get(key)
            number = isinstance(value, (int, float))
            self.rate_sums[key].append(self.rate_sums[key][-1] + (value if number else 0.0))
            self.rate_counts[key].append(self.rate_counts[key][-1] + number)
        loss = record.get("loss")
        if isinstance(loss, (int, float)):
            self.losses += 1
            self.loss_sums.append(self.loss_sums[-1] + loss)
            if self.first_loss is None:
                self.first_loss = loss
            self.last_loss = loss
            if self.best_loss is None or loss < self.best_loss:
                self.best_loss, self.best_step = loss, record["step"]
        for key in self.peaks:
            value = record.get(key)
            if isinstance(value, (int, float)) and value > self.peaks[key]:
                self.peaks[key] = value
        self.add_evaluation(record)

    def mean(self, key: str, start: int, end: int) -> float | None:
        """Mean of `key` over records[start:end], where present."""
        count = self.rate_counts[key][end] - self.rate_counts[key][start]
        return (self.rate_sums[key][end] - self.rate_sums[key][start]) / count if count else None

    def loss_trend(self) -> str | None:
        """'falling', 'flat' or 'rising': the last quarter's mean loss against the first's."""
        if self.losses < 4:
            return None
        quarter = max(1, self.losses // 4)
        first = self.loss_sums[quarter] / quarter
        last = (self.loss_sums[self.losses] - self.loss_sums[self.losses - quarter]) / quarter
        change = (last - first) / abs(first) if first else 0.0
        return "falling" if change < -0.01 else "rising" if change > 0.01 else "flat"


def warmup_records(count: int) -> int:
    """How many leading records steady-state figures skip: at least one when there are several."""
    return max(1, int(count * WARMUP_FRACTION)) if count >= 3 else 0


def steady_state(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records after warm-up: at least the first one is always dropped when there are several."""
    return records[warmup_records(len(records)):]


def mean_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def analyze(records: list[dict[str, Any]], progress: dict[str, Any], status: str,
            started_at: float | None, finished_at: float | None,
            phases: dict[str, float] | None = None, now: float | None = None,
            stats: RunningStats | None = None) -> dict[str, Any]:
    """`stats` are the records' RunningStats when the caller keeps them (MetricsLog does)."""
    now = time.time() if now is None else now
    stats = stats if stats is not None else RunningStats(records)
    end = finished_at or now
    elapsed = (end - started_at) if started_at else 0.0
    skip, count = warmup_records(len(records)), len(records)
    steps_per_s = None
    if count - skip >= 2 and records[-1]["time"] > records[skip]["time"]:
        steps_per_s = ((records[-1]["step"] - records[skip]["step"])
                       / (records[-1]["time"] - records[skip]["time"]))
    step, total = progress.get("step") or 0, progress.get("total_steps")
    eta = None
    if status == "running" and steps_per_s and total:
        eta = max(0.0, (total - step) / steps_per_s)
    elif status == "completed":
        eta = 0.0
    return {
        "status": status,
        "step": step,
        "total_steps": total,
        "elapsed_s": elapsed,
        "eta_s": eta,
        "steps_per_s": steps_per_s,
        "samples_per_s": stats.mean("samples_per_s", skip, count),
        "tokens_per_s": stats.mean("tokens_per_s", skip, count),
        "best_loss": stats.best_loss,
        "best_step": stats.best_step,
        "first_loss": stats.first_loss,
        "last_loss": stats.last_loss,
        "loss_trend": stats.loss_trend(),
        "evaluations": stats.evaluations,
        "eval_loss": stats.last_eval_loss,
        "best_eval_loss": stats.best_eval_loss,
        "best_eval_step": stats.best_eval_step,
        "peak_gpu_mem_mb": stats.peaks["gpu_mem_peak_mb"] or None,
        "peak_rss_mb": stats.peaks["rss_mb"] or None,
        "phases": phases or {},
    }
