"""Presets: one YAML file per training template under presets/.

A preset says *how* to train (method, adapter, hyperparameters) and lists only what differs from
the schema's defaults. Besides config fields it carries `title`, `description`, `sample` (the
format of the shipped sample used when a job names no dataset) and `order` (its place in lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.config import (
    FORMATS,
    ConfigError,
    check_keys,
    default_config,
    shorten,
    validate_fields,
)

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESET = "basic-fine-tune"
PRESET_KEYS = ("title", "description", "sample", "order")


@dataclass
class Preset:
    name: str
    title: str
    description: str
    sample: str
    order: int
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.overrides.get("method", default_config()["method"])

    def config(self) -> dict[str, Any]:
        """The schema defaults with this preset's values applied."""
        return {**default_config(), **self.overrides}

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description,
                "method": self.method}

    def form_values(self) -> dict[str, Any]:
        """What fills the new-job form: the config with the preset's title and description."""
        # The config's own `name` (the job name, empty) follows the preset's: a form filled from
        # this must not name the job after the template.
        return {"name": self.name, "title": self.title, "description": self.description,
                "sample": self.sample, **self.config(), "preset": self.name}


def load_preset(path: Path) -> Preset:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset {path.name}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path.name}: expected a mapping of field: value")
    problems = [f"preset {path.name}: {p}" for p in check_keys(data, PRESET_KEYS)]
    meta = {k: data.pop(k) for k in PRESET_KEYS if k in data}
    if meta.get("sample") not in FORMATS:
        problems.append(f"preset {path.name}: sample must be one of {', '.join(FORMATS)}")
    if problems:
        raise ConfigError(problems)
    try:
        overrides = validate_fields(data)
    except ConfigError as exc:
        raise ConfigError([f"preset {path.name}: {p}" for p in exc.problems], exc.fields) from None
    return Preset(name=path.stem, title=str(meta.get("title", path.stem)),
                  description=str(meta.get("description", "")), sample=meta["sample"],
                  order=int(meta.get("order", 100)), overrides=overrides)


class PresetLibrary:
    """All presets of a folder, read once at start-up (a broken file stops start-up, naming it)."""

    def __init__(self, folder: Path = PRESETS_DIR):
        presets = [load_preset(p) for p in sorted(folder.glob("*.yaml"))]
        self._presets = {p.name: p for p in sorted(presets, key=lambda p: (p.order, p.name))}
        if not self._presets:
            raise ConfigError(f"no presets in {folder}")

    @property
    def default_name(self) -> str:
        return DEFAULT_PRESET if DEFAULT_PRESET in self._presets else next(iter(self._presets))

    def names(self) -> list[str]:
        return list(self._presets)

    def get(self, name: str | None) -> Preset:
        name = name or self.default_name
        if not isinstance(name, str) or name not in self._presets:
            raise ConfigError(f"preset {shorten(name)} does not exist; choose one of: "
                              f"{', '.join(self._presets)}")
        return self._presets[name]

    def summaries(self) -> list[dict[str, Any]]:
        return [p.summary() for p in self._presets.values()]
