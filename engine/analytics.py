"""Run analytics computed from a job's metric records: rates, ETA, best loss, trend."""

from __future__ import annotations

import statistics
import time
from typing import Any

WARMUP_FRACTION = 0.1  # the first 10% of logged steps (compilation, caches, allocator) are skipped


def steady_state(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records after warm-up: at least the first one is always dropped when there are several."""
    if len(records) < 3:
        return records
    skip = max(1, int(len(records) * WARMUP_FRACTION))
    return records[skip:]


def mean_of(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def analyze(records: list[dict[str, Any]], progress: dict[str, Any], status: str,
            started_at: float | None, finished_at: float | None,
            phases: dict[str, float] | None = None, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    end = finished_at or now
    elapsed = (end - started_at) if started_at else 0.0
    steady = steady_state(records)
    steps_per_s = None
    if len(steady) >= 2 and steady[-1]["time"] > steady[0]["time"]:
        steps_per_s = (steady[-1]["step"] - steady[0]["step"]) / (steady[-1]["time"] - steady[0]["time"])
    step, total = progress.get("step") or 0, progress.get("total_steps")
    eta = None
    if status == "running" and steps_per_s and total:
        eta = max(0.0, (total - step) / steps_per_s)
    elif status == "completed":
        eta = 0.0
    losses = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), (int, float))]
    best_step, best_loss = min(losses, key=lambda p: p[1]) if losses else (None, None)
    return {
        "status": status,
        "step": step,
        "total_steps": total,
        "elapsed_s": elapsed,
        "eta_s": eta,
        "steps_per_s": steps_per_s,
        "samples_per_s": mean_of(steady, "samples_per_s"),
        "tokens_per_s": mean_of(steady, "tokens_per_s"),
        "best_loss": best_loss,
        "best_step": best_step,
        "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None,
        "loss_trend": loss_trend(losses),
        "peak_gpu_mem_mb": max((r.get("gpu_mem_peak_mb", 0) for r in records), default=None) or None,
        "peak_rss_mb": max((r.get("rss_mb", 0) for r in records), default=None) or None,
        "phases": phases or {},
    }


def loss_trend(losses: list[tuple[int, float]]) -> str | None:
    """'falling', 'flat' or 'rising': the last quarter's mean against the first quarter's."""
    if len(losses) < 4:
        return None
    quarter = max(1, len(losses) // 4)
    first = statistics.fmean(v for _, v in losses[:quarter])
    last = statistics.fmean(v for _, v in losses[-quarter:])
    change = (last - first) / abs(first) if first else 0.0
    return "falling" if change < -0.01 else "rising" if change > 0.01 else "flat"
