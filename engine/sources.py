"""Where a model or dataset comes from: a local path, or a Hugging Face Hub id.

A hub id is checked at submit time (local cache first, then a short request to the hub), so an
offline machine refuses the job at once with a clear message instead of failing minutes later
inside the trainer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi, try_to_load_from_cache
from huggingface_hub.utils import HfHubHTTPError

from engine.config import ConfigError

REPO_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_DIR / "data"
TINY_MODEL = DATA_DIR / "tiny-model"
SAMPLES_DIR = DATA_DIR / "samples"
SAMPLE_FILES = {
    "messages": "chat.jsonl",
    "instruction": "instruction.jsonl",
    "prompt_completion": "prompt_completion.jsonl",
    "text": "text.jsonl",
    "preference": "preference.jsonl",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_TIMEOUT_S = 5


def sample_dataset(fmt: str) -> Path:
    return SAMPLES_DIR / SAMPLE_FILES[fmt]


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


def resolve_model(value: str, base: Path) -> str:
    """An absolute local folder, or the hub id unchanged once it is known to be reachable."""
    if not value:
        return str(TINY_MODEL)
    local = _local_path(value, base)
    if local is not None:
        if not local.is_dir():
            raise ConfigError(f"model {value}: is a file; name the model's folder")
        if not (local / "config.json").exists() and not (local / "adapter_config.json").exists():
            raise ConfigError(f"model {value}: the folder has no config.json, so it is not a "
                              f"transformers model")
        return str(local)
    if looks_like_path(value) or not HUB_ID.match(value):
        raise ConfigError(f"model {value}: no such folder, and not a Hugging Face Hub id "
                          f"(organisation/name)")
    check_hub(value, "model")
    return value


def resolve_dataset_location(value: str, base: Path) -> tuple[str, bool]:
    """(location, is_local). A local value becomes an absolute path."""
    local = _local_path(value, base)
    if local is not None:
        return str(local), True
    if looks_like_path(value) or Path(value).suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"):
        raise ConfigError(f"dataset {value}: no such file")
    if not HUB_ID.match(value):
        raise ConfigError(f"dataset {value}: no such file, and not a Hugging Face Hub id")
    check_hub(value, "dataset")
    return value, False


def _local_path(value: str, base: Path) -> Path | None:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return path.resolve() if path.exists() else None


def check_hub(repo_id: str, kind: str) -> None:
    """Refuse a hub id that is neither cached here nor reachable now."""
    cached = try_to_load_from_cache(repo_id, "config.json" if kind == "model" else "README.md",
                                    repo_type=kind)
    if isinstance(cached, str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        raise ConfigError(f"{kind} {repo_id}: not in the local Hugging Face cache, and "
                          f"HF_HUB_OFFLINE is set; use a local path")
    api = HfApi()
    try:
        if kind == "model":
            api.model_info(repo_id, timeout=HUB_TIMEOUT_S)
        else:
            api.dataset_info(repo_id, timeout=HUB_TIMEOUT_S)
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403, 404):
            raise ConfigError(f"{kind} {repo_id}: not found on the Hugging Face Hub (or it is "
                              f"gated/private and no token is set)") from None
        raise ConfigError(f"{kind} {repo_id}: the Hugging Face Hub answered {status}: {exc}") from None
    except Exception as exc:  # DNS, connection refused, timeout: this machine is offline
        raise ConfigError(
            f"{kind} {repo_id}: not a local path, and the Hugging Face Hub cannot be reached from "
            f"this machine ({type(exc).__name__}: {exc}). Download it where there is network and "
            f"give its local path.") from None
