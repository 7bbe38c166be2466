"""Where jobs run when the console fronts a cluster: the settings of `cluster.yaml` (or the
command line), checked, and the device bookkeeping for a cluster, where the cluster's scheduler
places the work and TrainDeck only counts GPUs for quotas."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from engine.config import ConfigError

# A Slurm name (partition, account, QOS): letters, digits and a few marks; nothing a shell or
# sbatch would read as another option.
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")  # minutes, H:MM:SS or D-HH:MM:SS
MAX_EXTRA_LINES = 20


@dataclass(frozen=True)
class ClusterSettings:
    """cluster.yaml; every field is optional."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None       # sbatch --time, e.g. "2-00:00:00"
    gpus: bool = True                   # ask for GPUs with --gres=gpu:N
    python: str | None = None           # the Python on the nodes (default: this console's)
    nice_base: int = 10000              # --nice of priority 0; higher priorities get less
    notice_seconds: int = 120           # USR1 this long before the time limit: checkpoint, requeue
    sbatch_extra: tuple[str, ...] = field(default_factory=tuple)  # e.g. "--constraint=a100"

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any] | None = None) -> ClusterSettings:
        data: dict[str, Any] = {}
        if path is not None and path.exists():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML ({exc})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a mapping of settings")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.checked(data, str(path or "cluster settings"))

    @classmethod
    def checked(cls, data: dict[str, Any], where: str) -> ClusterSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
                              f"allowed: {', '.join(sorted(known))}")
        for name in ("partition", "account", "qos"):
            value = data.get(name)
            if value is not None and not (isinstance(value, str) and NAME.match(value)):
                raise ConfigError(f"{where}: {name} must be a Slurm name (letters, digits, _ . -)")
        limit = data.get("time_limit")
        if limit is not None and not (isinstance(limit, str) and TIME.match(limit)):
            raise ConfigError(f"{where}: time_limit must be minutes, H:MM:SS or D-HH:MM:SS")
        extra = data.get("sbatch_extra") or []
        if (not isinstance(extra, list) or len(extra) > MAX_EXTRA_LINES or not all(
                isinstance(x, str) and x.startswith("--") and "\n" not in x for x in extra)):
            raise ConfigError(f"{where}: sbatch_extra must be a list of at most "
                              f"{MAX_EXTRA_LINES} sbatch options, each starting with --")
        if not isinstance(data.get("gpus", True), bool):
            raise ConfigError(f"{where}: gpus must be true or false")
        nice = data.get("nice_base", 10000)
        if not isinstance(nice, int) or not 0 <= nice <= 2**31 - 1:
            raise ConfigError(f"{where}: nice_base must be a whole number >= 0")
        notice = data.get("notice_seconds", 120)
        if not isinstance(notice, int) or not 10 <= notice <= 86400:
            raise ConfigError(f"{where}: notice_seconds must be a whole number from 10 to 86400")
        return cls(**{**data, "sbatch_extra": tuple(extra)})
