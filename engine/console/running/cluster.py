"""Where jobs run when the console fronts a cluster: the settings of `cluster.yaml` (or the
command line), checked, and the device bookkeeping for a cluster, where the cluster's scheduler
places the work and TrainDeck only counts GPUs for quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from engine.config import ConfigError
from engine.schema import validated

MAX_EXTRA_LINES = 20
# A Slurm name (partition, account, QOS): letters, digits and a few marks; nothing a shell or
# sbatch would read as another option.
SlurmName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                                 description="a Slurm name (letters, digits, _ . -)")]
# One line of the batch script's #SBATCH header: an option, never a second line.
SbatchOption = Annotated[str, Field(pattern=r"^--[^\n]*$")]


class ClusterSettings(BaseModel):
    """cluster.yaml; every field is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    partition: SlurmName | None = None
    account: SlurmName | None = None
    qos: SlurmName | None = None
    time_limit: str | None = Field(  # sbatch --time, e.g. "2-00:00:00"
        None, pattern=r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$",
        description="minutes, H:MM:SS or D-HH:MM:SS")
    gpus: bool = True                   # ask for GPUs with --gres=gpu:N
    python: str | None = None           # the Python on the nodes (default: this console's)
    nice_base: int = Field(10000, ge=0, le=2**31 - 1)  # --nice of priority 0; higher get less
    # USR1 this long before the time limit: checkpoint, requeue.
    notice_seconds: int = Field(120, ge=10, le=86400)
    sbatch_extra: tuple[SbatchOption, ...] = Field(  # e.g. "--constraint=a100"
        (), max_length=MAX_EXTRA_LINES, strict=False,  # YAML gives a list
        description=f"a list of at most {MAX_EXTRA_LINES} sbatch options, each starting with --")

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
        return validated(cls, data, where)
