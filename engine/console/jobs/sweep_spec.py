"""A sweep's request, read and checked: a base config and the values to try, as a grid (every
combination) or a random sample (a number of trials drawn by a seed). Only the shape is checked
here; each run's config is then checked like any submission."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from engine.config import ConfigError, check_keys, field_type, shorten

MAX_RUNS = 32  # a sweep queues every run at once: bounded like everything a user submits
MAX_VALUES = 32
SPEC_KEYS = ("name", "base", "grid", "random", "trials", "seed", "priority")
# What a sweep may not vary: what names the runs, orders them, or says what they start from.
NOT_SWEPT = ("name", "priority", "preset")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    runs: tuple[dict[str, Any], ...]  # the values each run changes, in submit order
    priority: int | None


def parse_sweep(spec: Any) -> SweepSpec:
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep must be an object with base and grid (or random), got "
                          f"{type(spec).__name__}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"sweep: unknown key {shorten(unknown[0])}; allowed: "
                          f"{', '.join(SPEC_KEYS)}")
    base = spec.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError("sweep base must be an object of field: value (a /submit_job config)")
    if ("grid" in spec) == ("random" in spec):
        raise ConfigError("sweep needs exactly one of grid (every combination) or random "
                          "(trials drawn from ranges)")
    runs = _grid(spec["grid"]) if "grid" in spec else _random(spec)
    if len(runs) > MAX_RUNS:
        raise ConfigError(f"sweep has {len(runs)} runs; at most {MAX_RUNS} at once")
    name = spec.get("name") or "sweep"
    if not isinstance(name, str) or len(name) > 100:
        raise ConfigError("sweep name must be text of at most 100 characters")
    priority = spec.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigError(f"sweep priority must be a whole number, got {shorten(priority)}")
    return SweepSpec(name.strip() or "sweep", base, tuple(runs), priority)


def _fields(values: Any, kind: str) -> dict[str, Any]:
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"sweep {kind} must be an object of field: values, with at least one "
                          f"field")
    problems = check_keys(values)
    problems += [f"sweep {kind}: {name} cannot be swept (it names or orders the runs)"
                 for name in values if name in NOT_SWEPT]
    if problems:
        raise ConfigError(problems)
    return values


def _grid(grid: Any) -> list[dict[str, Any]]:
    grid = _fields(grid, "grid")
    for name, values in grid.items():
        if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
            raise ConfigError(f"sweep grid: {name} must be a list of 1 to {MAX_VALUES} values, "
                              f"got {shorten(values)}")
    names = list(grid)
    combinations = math.prod(len(grid[n]) for n in names)
    if combinations > MAX_RUNS:
        raise ConfigError(f"sweep grid has {combinations} combinations; at most {MAX_RUNS}")
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(grid[n] for n in names))]


def _random(spec: dict[str, Any]) -> list[dict[str, Any]]:
    space = _fields(spec["random"], "random")
    trials, seed = spec.get("trials", 4), spec.get("seed", 0)
    for key, value, top in (("trials", trials, MAX_RUNS), ("seed", seed, 2**32 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise ConfigError(f"sweep {key} must be a whole number from 0 to {top}, got "
                              f"{shorten(value)}")
    if trials == 0:
        raise ConfigError("sweep trials must be at least 1")
    draw = random.Random(seed)
    return [{name: _draw(name, choices, draw) for name, choices in space.items()}
            for _ in range(trials)]


def _draw(name: str, choices: Any, draw: random.Random) -> Any:
    """One value: a choice from a list, or from a range {low, high, log}."""
    if isinstance(choices, list) and choices and len(choices) <= MAX_VALUES:
        return draw.choice(choices)
    if not isinstance(choices, dict) or set(choices) - {"low", "high", "log"}:
        raise ConfigError(f"sweep random: {name} must be a list of values or a range "
                          f"{{low, high, log}}, got {shorten(choices)}")
    low, high, log = choices.get("low"), choices.get("high"), choices.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not low < high or (log and low <= 0):
        raise ConfigError(f"sweep random: {name} needs numbers low < high (both > 0 with log), "
                          f"got {shorten(choices)}")
    if field_type(name) not in (int, float):
        raise ConfigError(f"sweep random: {name} is not a number; give a list of values")
    value = (math.exp(draw.uniform(math.log(low), math.log(high))) if log
             else draw.uniform(low, high))
    return round(value) if field_type(name) is int else float(f"{value:.4g}")


def describe(values: dict[str, Any]) -> str:
    """A run's values as its name shows them: learning_rate=0.0001 lora_r=8."""
    return " ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in values.items())

