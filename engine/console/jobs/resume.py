"""Resuming a stopped job (same id) from a checkpoint, optionally with changes to its config: the
changes go through the same resolution as a submit, and those the checkpoints cannot follow (the
model, the adapter's shape, ...) or that break exact continuation (unless allowed) are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import machine as machines
from engine.config import ConfigError, JobConfig
from engine.console.people.access import Access
from engine.console.records.job import IllegalTransition, Job, JobStatus, can_transition
from engine.console.records.store import JobStore
from engine.console.records.workspace import Workspace
from engine.console.results.zips import checkpoint_folder
from engine.console.running.devices import DevicePool
from engine.jobfiles import JobPaths, checkpoint_step
from engine.presets import PresetLibrary
from engine.resolve import Resolution, resolve

# Resume keeps these as they were: the checkpoints only make sense with them.
CHECKPOINT_BOUND = ("method", "model", "dataset", "dataset_format", "adapter", "lora_r",
                    "lora_alpha", "lora_target_modules", "max_length", "packing")
# Changing these is allowed on request, but the run then differs from a straight one.
EXACTNESS_BOUND = ("per_device_train_batch_size", "gradient_accumulation_steps", "seed", "gpus")


def resume_point(paths: JobPaths, checkpoint: str | None) -> str | None:
    """The checkpoint a resume starts from: the one named, or the latest complete one."""
    if checkpoint:
        return checkpoint_folder(paths, checkpoint).name
    latest = paths.latest_checkpoint()
    return latest.name if latest else None


def check_ends_after(checkpoint: str | None, config: JobConfig) -> None:
    """A resume trains from its checkpoint to max_steps: one that ended before the checkpoint
    would have no step to train and a model from past its end."""
    step = checkpoint_step(checkpoint) or 0
    if 0 < config.max_steps < step:
        raise ConfigError(f"max_steps {config.max_steps} is before {checkpoint}: set max_steps to "
                          f"at least {step}, or resume from an earlier checkpoint")


class Resumer:
    def __init__(self, store: JobStore, access: Access, presets: PresetLibrary,
                 machine: machines.Machine, workspace: Workspace, devices: DevicePool,
                 base_dir: Path | None = None):
        self.store, self.access, self.presets = store, access, presets
        self.machine, self.workspace, self.devices = machine, workspace, devices
        self.base_dir = base_dir

    def requeued_fields(self, job: Job, checkpoint: str | None, changes: dict[str, Any] | None,
                        allow_inexact: bool) -> dict[str, Any]:
        """What a job queued again from `checkpoint` (or its latest complete one) records, with
        `changes` made to its config; raises when it cannot resume so. Under the store lock: the
        owner's queue quota counts the jobs queued until now."""
        if not can_transition(job.status, JobStatus.QUEUED):
            raise IllegalTransition(job.job_id, job.status, JobStatus.QUEUED.value)
        name = resume_point(self.workspace.job_paths(job.job_id), checkpoint)
        fields: dict[str, Any] = {"resume_from": name}
        if changes:
            resolution = self._changed(job, changes, allow_inexact or name is None)
            fields.update(config=resolution.config, priority=resolution.config.priority,
                          resolved={**job.resolved, **resolution.resolved})
            self.access.check_may_run(resolution.config, self.access.owner_of(job),
                                      self.devices)
        check_ends_after(name, fields.get("config", job.config))
        self.access.check_queue_quota(self.access.owner_of(job),
                                      self.store.all((JobStatus.QUEUED.value,)))
        return fields

    def _changed(self, job: Job, changes: Any, allow_inexact: bool) -> Resolution:
        if not isinstance(changes, dict):
            raise ConfigError("changes must be an object of field: value")
        if "preset" in changes:
            raise ConfigError("cannot change preset on resume; change the fields themselves")
        owner = self.access.owner_of(job)
        resolution = resolve(changes, self.presets, self.machine, self.base_dir, check_data=False,
                             rules=self.access.source_rules(owner), base=job.config)
        new = resolution.config
        frozen = [k for k in CHECKPOINT_BOUND if getattr(new, k) != getattr(job.config, k)]
        if frozen:
            raise ConfigError(f"cannot change {', '.join(frozen)} on resume: the checkpoints were "
                              f"made with the job's values; submit a new job instead")
        inexact = [k for k in EXACTNESS_BOUND if getattr(new, k) != getattr(job.config, k)]
        if inexact and not allow_inexact:
            raise ConfigError(f"changing {', '.join(inexact)} on resume breaks exact continuation "
                              f"(the resumed run would differ from a straight one); pass "
                              f"allow_inexact to do it anyway")
        return resolution
