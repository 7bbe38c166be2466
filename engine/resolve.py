"""Turn a submission (a preset name plus overrides) into the complete config a trainer runs.

Everything that can be checked before a job is queued is checked here: field names, types and
ranges, combinations, the model's and dataset's location, every dataset row. `auto` values are
replaced by what this machine calls for, and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import machine as machines
from engine.config import AUTO, METHOD_FORMATS, ConfigError, check_combinations, validate_fields
from engine.data import DatasetError, DatasetSummary, validate_local
from engine.presets import PresetLibrary
from engine.sources import SourceRules, resolve_dataset_location, resolve_model, sample_dataset


@dataclass
class Resolution:
    preset: str
    config: dict[str, Any]
    resolved: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetSummary | None = None


def resolve_submission(submission: Any, presets: PresetLibrary, machine: machines.Machine,
                       base_dir: Path | None = None, check_data: bool = True,
                       rules: SourceRules | None = None) -> Resolution:
    """`rules`: where this submitter's models and datasets may come from (None: anywhere)."""
    if submission is None:
        submission = {}
    if not isinstance(submission, dict):
        raise ConfigError(f"config must be an object of field: value, got {type(submission).__name__}")
    base_dir = base_dir or Path.cwd()
    preset = presets.get(submission.get("preset"))
    overrides = validate_fields({k: v for k, v in submission.items() if k != "preset"})
    config = {**preset.config(), **overrides}
    check_combinations(config)
    resolved: dict[str, Any] = {}

    config["model"] = resolve_model(config["model"], base_dir, rules)
    summary = None
    if not config["dataset"]:
        fmt = config["dataset_format"]
        if fmt == AUTO:
            fmt = preset.sample if preset.sample in METHOD_FORMATS[config["method"]] \
                else METHOD_FORMATS[config["method"]][0]
        config["dataset"] = str(sample_dataset(fmt))
    location, is_local = resolve_dataset_location(config["dataset"], base_dir, rules)
    config["dataset"] = location
    if is_local and check_data:
        try:
            summary = validate_local(location, config["dataset_format"], config["method"])
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        if config["dataset_format"] == AUTO:
            resolved["dataset_format"] = summary.format
        config["dataset_format"] = summary.format
        resolved["dataset_rows"] = summary.rows

    _resolve_auto(config, resolved, machine)
    return Resolution(preset=preset.name, config={"preset": preset.name, **config},
                      resolved=resolved, dataset=summary)


def _resolve_auto(config: dict[str, Any], resolved: dict[str, Any], machine: machines.Machine) -> None:
    if config["precision"] == AUTO:
        config["precision"] = resolved["precision"] = machines.auto_precision(machine)
    if config["precision"] == "fp16" and not machine.has_cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU, and this machine has none "
                          "(use auto, fp32 or bf16)")
    if config["optim"] == AUTO:
        config["optim"] = resolved["optim"] = machines.auto_optimizer(machine)
    if config["dataloader_num_workers"] == AUTO:
        config["dataloader_num_workers"] = resolved["dataloader_num_workers"] = \
            machines.auto_num_workers(machine)
    if config["dataloader_prefetch_factor"] == AUTO:
        config["dataloader_prefetch_factor"] = resolved["dataloader_prefetch_factor"] = \
            machines.auto_prefetch_factor(config["dataloader_num_workers"])
    if config["dataloader_num_workers"] == 0 and config["dataloader_prefetch_factor"] is not None:
        raise ConfigError("dataloader_prefetch_factor needs dataloader_num_workers > 0 "
                          "(set it to null or auto)")
