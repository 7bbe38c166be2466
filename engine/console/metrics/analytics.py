"""Run analytics computed from a job's metric records: rates, ETA, best (eval) loss, trend."""

from __future__ import annotations

import time
from typing import Any

from engine.console.metrics.log import RunningStats

WARMUP_FRACTION = 0.1  # the first 10% of logged steps (compilation, caches, allocator) are skipped


def warmup_records(count: int) -> int:
    """How many leading records steady-state figures skip: at least one when there are several."""
    return max(1, int(count * WARMUP_FRACTION)) if count >= 3 else 0


def steady_state(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records after warm-up: at least the first one is always dropped when there are several."""
    return records[warmup_records(len(records)):]


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
