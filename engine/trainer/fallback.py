"""No out-of-memory failure that a smaller micro-batch avoids: when a step runs out of GPU memory,
training continues from the last complete checkpoint with half the micro-batch and twice the
gradient accumulation (the same effective batch, the same examples in the same order), down to a
micro-batch of 1. Each change is recorded in the job folder (microbatch.json) for the console."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch

from engine.atomic import write_json_atomic
from engine.config import JobConfig
from engine.jobfiles import JobPaths, checkpoint_step, read_json, truncate_after
from engine.methods import METHODS
from engine.trainer.errors import TrainingGaveUp


def smaller(config: JobConfig) -> JobConfig | None:
    """The next micro-batch down, the effective batch kept (None: already the smallest the method
    allows, 1 but for KTO's 2). A size that does not halve steps to its largest divisor (6 -> 3,
    5 -> 1)."""
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    least = METHODS[config.method].min_batch
    lower = next((d for d in range(batch // 2, least - 1, -1) if batch % d == 0), None)
    if lower is None:
        return None
    return config.replace(per_device_train_batch_size=lower,
                          gradient_accumulation_steps=accumulation * (batch // lower))


def train(build: Callable[[JobConfig], tuple], config: JobConfig, paths: JobPaths,
          resume_from: str | None, first: tuple | None = None):
    """Train (`first`: the trainer already built for `config`), stepping the micro-batch down and
    building a new trainer on each out-of-memory error; returns (trainer, control, the config it
    finished with)."""
    while True:
        trainer, control = first or build(config)
        first = None
        try:
            trainer.train(resume_from_checkpoint=str(paths.root / resume_from) if resume_from
                          else None)
            return trainer, control, config
        except torch.OutOfMemoryError as exc:
            step = trainer.state.global_step + 1
            del trainer, control
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            lower = smaller(config)
            if lower is None:
                raise TrainingGaveUp(
                    f"out of GPU memory at step {step} even with a micro-batch of "
                    f"{config.per_device_train_batch_size} (as low as it goes for "
                    f"{config.method}; gradient accumulation "
                    f"{config.gradient_accumulation_steps}): use a smaller max_length, "
                    f"gradient_checkpointing, qlora, or a bigger GPU") from exc
            latest = paths.latest_checkpoint()
            resume_from = latest.name if latest else None
            truncate_after(paths.metrics, checkpoint_step(latest.name) if latest else 0)
            record(paths, config, lower, step, resume_from, str(exc))
            print(f"out of memory at step {step}: micro-batch {config.per_device_train_batch_size}"
                  f" -> {lower.per_device_train_batch_size}, gradient accumulation "
                  f"{config.gradient_accumulation_steps} -> {lower.gradient_accumulation_steps} "
                  f"(same effective batch); continuing from {resume_from or 'the start'}",
                  flush=True)
            config = lower


def record(paths: JobPaths, old: JobConfig, new: JobConfig, step: int, resumed_from: str | None,
           reason: str) -> None:
    changes = read_json(paths.microbatch) or {"changes": []}
    changes["changes"].append({
        "time": time.time(), "at_step": step, "resumed_from": resumed_from,
        "from": {"per_device_train_batch_size": old.per_device_train_batch_size,
                 "gradient_accumulation_steps": old.gradient_accumulation_steps},
        "to": {"per_device_train_batch_size": new.per_device_train_batch_size,
               "gradient_accumulation_steps": new.gradient_accumulation_steps},
        "reason": reason.splitlines()[0][:300] if reason else "out of memory"})
    write_json_atomic(paths.microbatch, changes)

