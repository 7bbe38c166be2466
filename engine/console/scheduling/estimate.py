"""How long a run will be, said before it is submitted: its optimizer steps (from max_steps, or
from the dataset's rows, the batch and the epochs), and its duration at the pace of the newest
finished run on this console that did the same work per step (same model, method, adapter,
batch, accumulation, length and devices), if there is one."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from engine.config import JobConfig
from engine.console.records.job import Job, JobStatus

# What decides the work of one optimizer step.
SAME_WORK = ("model", "method", "adapter", "per_device_train_batch_size",
             "gradient_accumulation_steps", "max_length", "packing", "gpus", "nodes")


def planned_steps(config: JobConfig, rows: int | None) -> int | None:
    if config.max_steps > 0:
        return config.max_steps
    if not rows:
        return None  # a Hub dataset: its rows are counted by the trainer
    per_step = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                * config.gpus * config.nodes)
    return math.ceil(math.ceil(rows / per_step) * config.num_train_epochs)


def pace_of(config: JobConfig, jobs: Iterable[Job],
            steps_per_s: Callable[[str], float | None]) -> tuple[str, float] | None:
    """(job id, steps per second) of the newest completed run with the same work per step."""
    alike = [job for job in jobs if job.status == JobStatus.COMPLETED
             and all(getattr(job.config, name) == getattr(config, name) for name in SAME_WORK)]
    for job in sorted(alike, key=lambda j: j.finished_at or 0, reverse=True)[:5]:
        pace = steps_per_s(job.job_id)
        if pace:
            return job.job_id, pace
    return None


def describe_length(config: JobConfig, rows: int | None, pace: tuple[str, float] | None) -> str:
    steps = planned_steps(config, rows)
    if steps is None:
        return "Length: counted by the trainer (a Hub dataset's rows are not known here)."
    text = f"Length: **{steps:,} optimizer steps**"
    if config.max_steps <= 0:
        text += (f" ({rows:,} rows, {config.num_train_epochs:g} epoch"
                 f"{'s' if config.num_train_epochs != 1 else ''})")
    if pace is None:
        return text + "; no finished run of this model and batch here yet to time it by."
    job_id, steps_per_s = pace
    return text + f"; about **{duration(steps / steps_per_s)}** at the pace of job `{job_id}`."


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def length_note(config: JobConfig, resolved: dict[str, Any], jobs: Iterable[Job],
                steps_per_s: Callable[[str], float | None]) -> str:
    rows = resolved.get("dataset_rows")
    if rows and config.eval_split:
        rows -= resolved.get("eval_rows") or 0  # held out: not trained on
    return describe_length(config, rows, pace_of(config, jobs, steps_per_s))
