"""Turn a submission (a preset name plus overrides) into the complete config a trainer runs.

One pipeline for every way a config comes in: a submit, a resume with changes, and a plain config
given to the headless trainer. Everything that can be checked before a job is queued is checked
here: field names, types and ranges, combinations, the model's and dataset's location, every
dataset row. `auto` values are replaced by what this machine calls for, and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import capabilities
from engine import machine as machines
from engine.config import (
    AUTO,
    METHOD_FORMATS,
    ConfigError,
    JobConfig,
    check_combinations,
    validate_fields,
)
from engine.data import DatasetError, DatasetSummary, held_out_count, validate_local
from engine.memory import needs_checkpointing
from engine.presets import Preset, PresetLibrary
from engine.sources import SourceRules, resolve_dataset_location, resolve_model, sample_dataset


@dataclass
class Resolution:
    config: JobConfig
    resolved: dict[str, Any] = field(default_factory=dict)  # what `auto` became, and row counts
    dataset: DatasetSummary | None = None

    @property
    def preset(self) -> str:
        return self.config.preset


def resolve(submission: Any, presets: PresetLibrary, machine: machines.Machine,
            base_dir: Path | None = None, check_data: bool = True,
            rules: SourceRules | None = None, base: JobConfig | None = None) -> Resolution:
    """`submission`: field values over a preset (`preset` names it; none: the default) or, for a
    resume, over `base`, the job's config. `rules`: where this submitter's models and datasets may
    come from (None: anywhere). `check_data=False` skips reading every dataset row."""
    config, preset = _merge_submission(submission, presets, base)
    base_dir = base_dir or Path.cwd()
    resolved: dict[str, Any] = {}
    changes: dict[str, Any] = {"model": resolve_model(config.model, base_dir, rules)}
    dataset_changes, summary = _resolve_dataset(config, preset, base_dir, rules, resolved,
                                                check_data)
    changes.update(dataset_changes)
    changes.update(_resolve_evaluation(config.replace(**changes), summary, base_dir, rules,
                                       resolved, check_data))
    changes.update(_resolve_auto(config.replace(**changes), resolved, machine))
    _check_trackers_installed(config)
    return Resolution(config=config.replace(**changes), resolved=resolved, dataset=summary)


def _merge_submission(submission: Any, presets: PresetLibrary,
                      base: JobConfig | None) -> tuple[JobConfig, Preset | None]:
    """The submitted fields over their preset (or over `base`, for a resume), checked field by
    field and as a combination; with the preset they started from, if it still exists."""
    if submission is None:
        submission = {}
    if not isinstance(submission, dict):
        raise ConfigError(f"config must be an object of field: value, got "
                          f"{type(submission).__name__}")
    overrides = validate_fields({k: v for k, v in submission.items() if k != "preset"})
    if base is None:
        preset = presets.get(submission.get("preset"))
        values = {**preset.config(), **overrides, "preset": preset.name}
    else:
        preset = presets.get(base.preset) if base.preset in presets.names() else None
        values = {**base.to_dict(), **overrides}
    config = JobConfig.from_dict(values)
    check_combinations(config)
    return config, preset


def _resolve_dataset(config: JobConfig, preset: Preset | None, base_dir: Path,
                     rules: SourceRules | None, resolved: dict[str, Any],
                     check_data: bool) -> tuple[dict[str, Any], DatasetSummary | None]:
    """The training data's location (none given: the sample in a format the method suits) and,
    when it is a local file, every row checked and its format detected."""
    dataset = config.dataset or str(sample_dataset(_sample_format(config, preset)))
    location, is_local = resolve_dataset_location(dataset, base_dir, rules)
    changes: dict[str, Any] = {"dataset": location}
    if not (is_local and check_data):
        return changes, None
    try:
        summary = validate_local(location, config.dataset_format, config.method)
    except DatasetError as exc:
        raise ConfigError(str(exc), ("dataset",)) from None
    if config.dataset_format == AUTO:
        resolved["dataset_format"] = summary.format
    changes["dataset_format"] = summary.format
    resolved["dataset_rows"] = summary.rows
    return changes, summary


def _sample_format(config: JobConfig, preset: Preset | None) -> str:
    """The sample dataset's format: the one asked for, else the preset's if the method suits it,
    else the method's first."""
    if config.dataset_format != AUTO:
        return config.dataset_format
    sample = preset.sample if preset else None
    suited = METHOD_FORMATS[config.method]
    return sample if sample in suited else suited[0]


def _check_trackers_installed(config: JobConfig) -> None:
    """A tracker whose package is missing is refused here, not minutes later in the trainer."""
    missing = [name for name in config.trackers if not capabilities.installed(name)]
    if missing:
        raise ConfigError(f"report_to {', '.join(missing)}: the package is not installed on this "
                          f"console; pip install -e '.[tracking]' (or pip install "
                          f"{' '.join(missing)})", ("report_to",))


def _resolve_evaluation(config: JobConfig, summary: DatasetSummary | None, base_dir: Path,
                        rules: SourceRules | None, resolved: dict[str, Any],
                        check_data: bool) -> dict[str, Any]:
    """Where the job evaluates: the eval dataset's location (its rows checked like the training
    data's, in the same format), or how many rows eval_split holds out; and eval_steps."""
    changes: dict[str, Any] = {}
    if config.eval_dataset:
        location, is_local = resolve_dataset_location(config.eval_dataset, base_dir, rules,
                                                      "eval_dataset")
        changes["eval_dataset"] = location
        if is_local and check_data:
            try:
                found = validate_local(location, config.dataset_format, config.method)
            except DatasetError as exc:
                raise ConfigError(f"eval_dataset: {exc}", ("eval_dataset",)) from None
            resolved["eval_rows"] = found.rows
    if config.eval_split and summary is not None:
        try:
            resolved["eval_rows"] = held_out_count(summary.rows, config.eval_split)
        except DatasetError as exc:
            raise ConfigError(str(exc), ("eval_split",)) from None
    if config.eval_steps == AUTO:
        changes["eval_steps"] = config.save_steps
        if config.evaluates:
            resolved["eval_steps"] = config.save_steps
    return changes


def _resolve_auto(config: JobConfig, resolved: dict[str, Any],
                  machine: machines.Machine) -> dict[str, Any]:
    """What each `auto` field becomes on this machine (recorded in `resolved` too)."""
    chosen: dict[str, Any] = {}
    precision = config.precision
    if precision == AUTO:
        precision = chosen["precision"] = machines.auto_precision(machine)
    if precision == "fp16" and not machine.has_cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU, and this machine has none "
                          "(use auto, fp32 or bf16)", ("precision",))
    if config.optim == AUTO:
        chosen["optim"] = machines.auto_optimizer(machine)
    workers = config.dataloader_num_workers
    if workers == AUTO:
        workers = chosen["dataloader_num_workers"] = machines.auto_num_workers(machine)
    prefetch = config.dataloader_prefetch_factor
    if prefetch == AUTO:
        prefetch = chosen["dataloader_prefetch_factor"] = machines.auto_prefetch_factor(workers)
    if workers == 0 and prefetch is not None:
        raise ConfigError("dataloader_prefetch_factor needs dataloader_num_workers > 0 "
                          "(set it to null or auto)",
                          ("dataloader_prefetch_factor", "dataloader_num_workers"))
    chosen.update(_resolve_kernels(config.replace(**chosen), machine))
    resolved.update(chosen)
    return chosen


def _resolve_kernels(config: JobConfig, machine: machines.Machine) -> dict[str, Any]:
    """Attention kernel, Liger, padding-free batches and gradient checkpointing: `auto` takes
    each only where it is provably correct and available; an explicit choice that cannot work
    here is refused with the reason."""
    chosen: dict[str, Any] = {}
    attention = config.attn_implementation
    if attention == AUTO:
        attention = chosen["attn_implementation"] = machines.auto_attention(machine)
    elif attention.startswith("flash_attention") and not machine.has_cuda:
        raise ConfigError(f"attn_implementation {attention} needs a CUDA GPU, and this machine has "
                          f"none (use auto, sdpa or eager)", ("attn_implementation",))
    if config.use_liger_kernel == AUTO:
        chosen["use_liger_kernel"] = machine.has_cuda and capabilities.installed("liger_kernel")
    elif config.use_liger_kernel and not capabilities.installed("liger_kernel"):
        raise ConfigError("use_liger_kernel needs the liger-kernel package: pip install -e "
                          "'.[gpu]' (or set it to auto)", ("use_liger_kernel",))
    isolated = attention.startswith("flash_attention") or capabilities.packed_sequences_isolated()
    supported = config.applies("padding_free") and capabilities.trl_padding_free(config.method)
    if config.padding_free == AUTO:
        chosen["padding_free"] = isolated and supported
    elif config.padding_free and not supported:
        raise ConfigError(f"padding_free: the installed TRL does not support it for "
                          f"{config.method} (it falls back to padding); set it to auto or false",
                          ("padding_free",))
    elif config.padding_free and not isolated:
        raise ConfigError(f"padding_free with {attention} attention would let examples attend to "
                          f"each other in this transformers version; use FlashAttention, or auto",
                          ("padding_free",))
    if config.gradient_checkpointing == AUTO:
        gpu_mb = min((g.memory_total_mb for g in machine.gpus), default=None)
        chosen["gradient_checkpointing"] = needs_checkpointing(config.replace(**chosen), gpu_mb)
    return chosen
