"""Where a model or dataset comes from: a local path, or a Hugging Face Hub id.

A hub id is checked at submit time (local cache first, then a short request to the hub), so an
offline machine refuses the job at once with a clear message instead of failing minutes later
inside the trainer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub.utils import HfHubHTTPError

from engine import REPO_DIR
from engine.config import ConfigError, shorten

DATA_DIR = REPO_DIR / "data"
TINY_MODEL = DATA_DIR / "tiny-model"
SAMPLES_DIR = DATA_DIR / "samples"
SAMPLE_FILES = {
    "messages": "chat.jsonl",
    "instruction": "instruction.jsonl",
    "prompt_completion": "prompt_completion.jsonl",
    "text": "text.jsonl",
    "preference": "preference.jsonl",
    "unpaired_preference": "unpaired_preference.jsonl",
}
DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_TIMEOUT_S = 5


def sample_dataset(fmt: str) -> Path:
    return SAMPLES_DIR / SAMPLE_FILES[fmt]


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


class SourceRules:
    """Where one user's models and datasets may come from, on a shared console: the shipped tiny
    model and samples, the data roots an admin configured, the user's own uploads, and the folders
    of jobs they may use (their own, shared ones, every one for an admin). Everything else is
    refused with the same words whether it exists or not, so a refusal reveals nothing.

    `confined=False` (a console without logins or data roots: one person's machine) allows every
    local path."""

    def __init__(self, confined: bool, data_roots: tuple[Path, ...] = (),
                 workspace: Path | None = None, uploads: tuple[Path, ...] = (),
                 may_use_job: Callable[[str], bool] = lambda job_id: False):
        self.confined = confined
        self.data_roots = tuple(Path(os.path.realpath(r)) for r in data_roots)
        self.workspace = Path(os.path.realpath(workspace)) if workspace else None
        self.uploads = tuple(Path(os.path.realpath(u)) for u in uploads)
        self.may_use_job = may_use_job

    @classmethod
    def open(cls) -> SourceRules:
        return cls(confined=False)

    def candidate(self, value: str, base: Path) -> Path:
        """The absolute, symlink-free path a value names (it may not exist). `~` means nothing
        on a confined console: the server's home folder is not the user's."""
        path = Path(value) if self.confined else Path(value).expanduser()
        return Path(os.path.realpath(path if path.is_absolute() else base / path))

    def allows(self, path: Path) -> bool:
        if not self.confined or _under(path, DATA_DIR.resolve()):
            return True
        if self.workspace is not None and _under(path, self.workspace):
            # Inside the workspace only its own rules count, whatever data root holds it.
            if any(_under(path, u) for u in self.uploads):
                return True
            jobs = self.workspace / "jobs"
            if _under(path, jobs) and path != jobs:
                return self.may_use_job(path.relative_to(jobs).parts[0])
            return False
        return any(_under(path, root) for root in self.data_roots)

    def describe(self) -> str:
        places = ["your uploads", "the shipped samples and tiny model"]
        if self.data_roots:
            places.append("the data roots (" + ", ".join(str(r) for r in self.data_roots) + ")")
        places.append("your own or shared jobs' folders")
        return ", ".join(places)


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _refused(kind: str, value: str, rules: SourceRules) -> ConfigError:
    return ConfigError(f"{kind} {shorten(value, 120)}: not a place this console reads from; use "
                       f"{rules.describe()}, or a Hugging Face Hub id", (kind,))


def resolve_model(value: str, base: Path, rules: SourceRules | None = None) -> str:
    """An absolute local folder, or the hub id unchanged once it is known to be reachable."""
    if not value:
        return str(TINY_MODEL)
    rules = rules or SourceRules.open()
    local = rules.candidate(value, base)
    if rules.allows(local) and local.exists():
        if not local.is_dir():
            raise ConfigError(f"model {value}: is a file; name the model's folder", ("model",))
        if not (local / "config.json").exists() and not (local / "adapter_config.json").exists():
            raise ConfigError(f"model {value}: the folder has no config.json, so it is not a "
                              f"transformers model", ("model",))
        return str(local)
    if looks_like_path(value) or not HUB_ID.match(value):
        if not rules.allows(local):
            raise _refused("model", value, rules)
        raise ConfigError(f"model {value}: no such folder, and not a Hugging Face Hub id "
                          f"(organisation/name)", ("model",))
    check_hub(value, "model")
    return value


def resolve_dataset_location(value: str, base: Path, rules: SourceRules | None = None,
                             field_name: str = "dataset") -> tuple[str, bool]:
    """(location, is_local). A local value becomes an absolute path. `field_name`: the config
    field the value came from, which errors name."""
    rules = rules or SourceRules.open()
    local = rules.candidate(value, base)
    if rules.allows(local) and local.exists():
        return str(local), True
    looks_local = looks_like_path(value) or Path(value).suffix.lower() in DATASET_SUFFIXES
    if looks_local or not HUB_ID.match(value):
        if not rules.allows(local):
            raise _refused(field_name, value, rules)
        if looks_local:
            raise ConfigError(f"{field_name} {value}: no such file", (field_name,))
        raise ConfigError(f"{field_name} {value}: no such file, and not a Hugging Face Hub id",
                          (field_name,))
    check_hub(value, "dataset", field_name)
    return value, False


def check_hub(repo_id: str, kind: str, field_name: str | None = None) -> None:
    """Refuse a hub id that is neither cached here nor reachable now (`kind`: model or dataset;
    errors name `field_name`, the kind by default)."""
    cached = try_to_load_from_cache(repo_id, "config.json" if kind == "model" else "README.md",
                                    repo_type=kind)
    if isinstance(cached, str):
        return
    field = field_name or kind
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        raise ConfigError(f"{field} {repo_id}: not in the local Hugging Face cache, and "
                          f"HF_HUB_OFFLINE is set; use a local path", (field,))
    api = HfApi()
    try:
        if kind == "model":
            api.model_info(repo_id, timeout=HUB_TIMEOUT_S)
        else:
            api.dataset_info(repo_id, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403, 404):
            raise ConfigError(f"{field} {repo_id}: not found on the Hugging Face Hub (or it is "
                              f"gated/private and no token is set)", (field,)) from None
        raise ConfigError(f"{field} {repo_id}: the Hugging Face Hub answered {status}: {exc}",
                          (field,)) from None
    except Exception as exc:  # DNS, connection refused, timeout: this machine is offline
        raise ConfigError(
            f"{field} {repo_id}: not a local path, and the Hugging Face Hub cannot be reached "
            f"from this machine ({type(exc).__name__}: {exc}). Download it where there is "
            f"network and give its local path.", (field,)) from None
