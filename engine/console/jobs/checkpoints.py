"""A job's checkpoints as the console lists them: name, step, size, age and the losses recorded
at that step, with the best one marked."""

from __future__ import annotations

from typing import Any

from engine.console.metrics.log import MetricsLog
from engine.jobfiles import JobPaths, checkpoint_step


def mark_best(checkpoints: list[dict[str, Any]]) -> None:
    """The best checkpoint: lowest evaluation loss where the job evaluates, else lowest training
    loss (the trainer keeps the same one from rotation)."""
    for metric in ("eval_loss", "loss"):
        scored = [c for c in checkpoints if isinstance(c.get(metric), (int, float))]
        if scored:
            min(scored, key=lambda c: c[metric])["best"] = True
            return


def checkpoint_rows(paths: JobPaths, metrics: MetricsLog) -> list[dict[str, Any]]:
    """Each complete checkpoint; `metrics` are looked up by step, never scanned (polled)."""
    result: list[dict[str, Any]] = []
    for folder in paths.checkpoints():
        try:
            if folder.is_symlink():
                continue
            files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
            size, created = sum(p.stat().st_size for p in files), folder.stat().st_mtime
        except FileNotFoundError:
            continue  # rotated away by the trainer (save_total_limit) while being listed
        step = checkpoint_step(folder.name)
        record = metrics.at(step) or {}
        result.append({"name": folder.name, "step": step, "size_bytes": size,
                       "created_at": created, "loss": record.get("loss"),
                       "eval_loss": record.get("eval_loss"), "best": False})
    mark_best(result)
    return result
