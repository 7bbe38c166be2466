"""The one schema of a job's config.

Each field carries its help text, group and constraints once, in `field(metadata=...)`. The same
schema validates submissions, labels the UI's widgets and is what the trainer reads. Field names
follow TRL/transformers where one exists.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

AUTO = "auto"
FORMATS = ("messages", "instruction", "prompt_completion", "text", "preference")
METHOD_FORMATS = {
    "sft": ("messages", "instruction", "prompt_completion", "text"),
    "dpo": ("preference",),
}
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
              "adafactor", "sgd")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "warmup_stable_decay")


class ConfigError(ValueError):
    """One or more problems with a submitted config; str() lists them all, one per line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def spec(help: str, group: str, *, choices: tuple | None = None, minimum: float | None = None,
         above: float | None = None, maximum: float | None = None, chars: int | None = None,
         auto: bool = False, none: bool = False, advanced: bool = False) -> dict[str, Any]:
    """Field metadata. `minimum` and `maximum` are inclusive, `above` exclusive; `chars` caps a
    text's length; `auto` admits the string "auto", `none` admits null; `advanced` puts the widget
    in the UI's advanced section. Every number and text has an upper bound: a shared console must
    not accept a value that no trainer, store or client can handle."""
    return {"help": help, "group": group, "choices": choices, "minimum": minimum, "above": above,
            "maximum": maximum, "chars": chars, "auto": auto, "none": none, "advanced": advanced}


# Upper bounds, with the reasoning: generous for real work, finite for everything.
MAX_STEPS = 10_000_000  # a week at 16 steps/s
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's seed range: the trainer seeds numpy too
MAX_PRIORITY = 1000
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 1024


@dataclass
class JobConfig:
    # ---- Job ------------------------------------------------------------------------------------
    name: str = field(default="", metadata=spec(
        "A label for the job. Empty: the preset's name and the submit time.", "job",
        chars=MAX_NAME_CHARS))
    priority: int = field(default=0, metadata=spec(
        "Higher starts first; equal priorities start in submit order.", "job",
        minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY))
    gpus: int = field(default=1, metadata=spec(
        "GPUs for this job. More than one trains data-parallel (DDP through torchrun, one process "
        "per GPU; the batch size is per GPU).", "job", minimum=1, maximum=64))
    preempt: bool = field(default=False, metadata=spec(
        "Admins only: when this job cannot start, pause the lowest-priority running job (exactly, "
        "with a checkpoint) to make room; that job resumes by itself when room frees up.", "job",
        advanced=True))
    timeout_minutes: float = field(default=10.0, metadata=spec(
        "Kill the trainer and mark the job failed (resumable) after this long without progress.",
        "job", above=0, maximum=7 * 24 * 60, advanced=True))
    max_retries: int = field(default=0, metadata=spec(
        "Re-queue a crashed job from its last checkpoint up to this many times.", "job",
        minimum=0, maximum=10, advanced=True))
    seed: int = field(default=42, metadata=spec(
        "Seeds weights of new layers, dropout and data order; same seed, same run.", "job",
        minimum=0, maximum=MAX_SEED, advanced=True))

    # ---- Model and data -------------------------------------------------------------------------
    method: str = field(default="sft", metadata=spec(
        "sft: supervised fine-tuning on examples. dpo: preference alignment on chosen/rejected "
        "pairs.", "data", choices=tuple(METHOD_FORMATS)))
    model: str = field(default="", metadata=spec(
        "A local model folder or a Hugging Face Hub id. Empty: the embedded tiny model.", "data",
        chars=MAX_PATH_CHARS))
    dataset: str = field(default="", metadata=spec(
        "A local .jsonl/.json/.csv/.parquet file or a Hub dataset id. Empty: the preset's shipped "
        "sample.", "data", chars=MAX_PATH_CHARS))
    dataset_format: str = field(default=AUTO, metadata=spec(
        "How rows are shaped; auto detects it from the columns.", "data",
        choices=(AUTO,) + FORMATS))
    max_length: int = field(default=512, metadata=spec(
        "Tokens per example; longer examples are truncated.", "data", minimum=8, maximum=131072))
    packing: bool = field(default=False, metadata=spec(
        "Pack several short examples into each max_length sequence (SFT only).", "data",
        advanced=True))
    assistant_only_loss: bool = field(default=False, metadata=spec(
        "Chat data: learn only from the assistant's turns (SFT only).", "data", advanced=True))

    # ---- Adapter --------------------------------------------------------------------------------
    adapter: str = field(default="lora", metadata=spec(
        "lora: small trainable matrices on a frozen model. qlora: the same on a 4-bit frozen "
        "model. full: train every weight.", "adapter", choices=("lora", "qlora", "full")))
    lora_r: int = field(default=16, metadata=spec(
        "LoRA rank: capacity of the adapter.", "adapter", minimum=1, maximum=1024))
    lora_alpha: int = field(default=32, metadata=spec(
        "LoRA scale numerator; the update is scaled by lora_alpha / lora_r.", "adapter",
        minimum=1, maximum=8192))
    lora_dropout: float = field(default=0.05, metadata=spec(
        "Dropout on the adapter's input.", "adapter", minimum=0, maximum=0.9, advanced=True))
    lora_target_modules: str = field(default="all-linear", metadata=spec(
        "Layers that get adapters: all-linear, or comma-separated module names (q_proj,v_proj).",
        "adapter", chars=1000, advanced=True))

    # ---- Training -------------------------------------------------------------------------------
    learning_rate: float = field(default=2e-4, metadata=spec(
        "Peak learning rate.", "training", above=0, maximum=1))
    num_train_epochs: float = field(default=1.0, metadata=spec(
        "Passes over the dataset (ignored when max_steps > 0).", "training", above=0,
        maximum=1000))
    max_steps: int = field(default=-1, metadata=spec(
        "Optimizer steps to run; -1 runs num_train_epochs.", "training", minimum=-1,
        maximum=MAX_STEPS))
    per_device_train_batch_size: int = field(default=8, metadata=spec(
        "Examples per forward pass on each device.", "training", minimum=1, maximum=MAX_BATCH))
    gradient_accumulation_steps: int = field(default=1, metadata=spec(
        "Forward passes per optimizer step; effective batch = batch size x this x devices.",
        "training", minimum=1, maximum=MAX_BATCH))
    lr_scheduler_type: str = field(default="cosine", metadata=spec(
        "How the learning rate changes over the run.", "training", choices=SCHEDULERS,
        advanced=True))
    warmup_steps: float = field(default=0.03, metadata=spec(
        "Linear warm-up: a step count, or a fraction of the run when below 1.", "training",
        minimum=0, maximum=MAX_STEPS, advanced=True))
    weight_decay: float = field(default=0.0, metadata=spec(
        "AdamW weight decay.", "training", minimum=0, maximum=10, advanced=True))
    max_grad_norm: float = field(default=1.0, metadata=spec(
        "Clip gradients to this norm; 0 disables clipping.", "training", minimum=0, maximum=1e6,
        advanced=True))
    optim: str = field(default=AUTO, metadata=spec(
        "Optimizer; auto picks fused AdamW on CUDA, AdamW elsewhere.", "training",
        choices=OPTIMIZERS, advanced=True))
    precision: str = field(default=AUTO, metadata=spec(
        "Compute precision; auto picks bf16 on GPUs that support it, fp16 on older ones, fp32 on "
        "the CPU.", "training", choices=(AUTO, "fp32", "bf16", "fp16"), advanced=True))
    gradient_checkpointing: bool = field(default=False, metadata=spec(
        "Recompute activations in the backward pass: less memory, about 20% slower.", "training",
        advanced=True))
    beta: float = field(default=0.1, metadata=spec(
        "DPO: how far the policy may move from the reference model (higher = closer).",
        "training", above=0, maximum=100, advanced=True))

    # ---- Performance ----------------------------------------------------------------------------
    dataloader_num_workers: Any = field(default=AUTO, metadata=spec(
        "Processes preparing batches; auto chooses from the CPU count and whether there is a GPU.",
        "performance", minimum=0, maximum=64, auto=True, advanced=True))
    dataloader_prefetch_factor: Any = field(default=AUTO, metadata=spec(
        "Batches each worker prepares ahead; auto: 2 with workers, none without.",
        "performance", minimum=1, maximum=64, auto=True, none=True, advanced=True))
    group_by_length: bool = field(default=False, metadata=spec(
        "Batch examples of similar length together to waste less compute on padding.",
        "performance", advanced=True))

    # ---- Checkpoints and logging ----------------------------------------------------------------
    logging_steps: int = field(default=1, metadata=spec(
        "Record metrics every this many optimizer steps.", "checkpoints", minimum=1,
        maximum=MAX_STEPS, advanced=True))
    save_steps: int = field(default=100, metadata=spec(
        "Write a checkpoint every this many optimizer steps (pausing always writes one).",
        "checkpoints", minimum=1, maximum=MAX_STEPS, advanced=True))
    save_total_limit: int = field(default=3, metadata=spec(
        "Keep at most this many checkpoints; 0 keeps all.", "checkpoints", minimum=0,
        maximum=1000, advanced=True))


SCHEMA = {f.name: f for f in fields(JobConfig)}
# Keys a submission may carry besides the schema's fields.
SUBMIT_ONLY_KEYS = ("preset",)


def default_config() -> dict[str, Any]:
    return {name: f.default for name, f in SCHEMA.items() if f.default is not MISSING}


def field_type(name: str) -> type:
    annotation = SCHEMA[name].type
    return {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, object)


def coerce_field(name: str, value: Any) -> Any:
    """Turn one submitted value into its schema type, or raise ConfigError naming the field."""
    meta = SCHEMA[name].metadata
    if value is None and meta["none"]:
        return None
    if isinstance(value, str) and meta["auto"] and value.strip().lower() == AUTO:
        return AUTO
    kind = field_type(name)
    if kind is object:  # numeric fields that also admit "auto"
        kind = int
    try:
        value = _coerce(value, kind)
    except (TypeError, ValueError, OverflowError):
        allowed = _describe_allowed(name, kind)
        raise ConfigError(f"{name} must be {allowed}, got {shorten(value)}") from None
    _check_range(name, value, meta)
    return value


def shorten(value: Any, limit: int = 60) -> str:
    """repr() of a submitted value, cut short: error messages must not echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        if value in (0, 1):
            return bool(value)
        raise ValueError
    if isinstance(value, bool):
        raise TypeError  # True is an int in Python; never a number here
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not math.isfinite(number) or number != int(number):
            raise ValueError
        return int(number)
    if kind is float:
        number = float(value) if isinstance(value, (str, int, float)) else None
        if number is None or not math.isfinite(number):
            raise ValueError
        return number
    if kind is str:
        if not isinstance(value, str):
            raise TypeError
        return value.strip()
    return value


def _describe_allowed(name: str, kind: type) -> str:
    meta = SCHEMA[name].metadata
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[kind]
    if meta["auto"]:
        words += ' or "auto"'
    if meta["none"]:
        words += " or null"
    return words


def _check_range(name: str, value: Any, meta: dict) -> None:
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(meta['choices'])}; got {shorten(value)}")
    if isinstance(value, str):
        if meta["chars"] is not None and len(value) > meta["chars"]:
            raise ConfigError(f"{name} must be at most {meta['chars']} characters, got {len(value)}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(f"{name} must be one line of text without control characters")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if meta["above"] is not None and not value > meta["above"]:
        raise ConfigError(f"{name} must be > {number_text(meta['above'])}, got {number_text(value)}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"{name} must be >= {number_text(meta['minimum'])}, got "
                          f"{number_text(value)}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise ConfigError(f"{name} must be <= {number_text(meta['maximum'])}, got "
                          f"{number_text(value)}")


def number_text(value: float) -> str:
    """A number as a person reads it: whole numbers exactly (up to 18 digits), others short."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        value = int(value)
    if isinstance(value, int):
        if abs(value) < 10**18:
            return str(value)
        try:
            return f"{float(value):.3g}"
        except OverflowError:
            return f"an integer of {value.bit_length()} bits"
    return f"{value:g}"


MAX_KEYS = 100  # a config has about 40 fields; more keys than this is not a config


def check_keys(config: dict[str, Any], extra: tuple[str, ...] = ()) -> list[str]:
    """Problems with unknown keys, each with the nearest known name when there is one."""
    known = list(SCHEMA) + list(SUBMIT_ONLY_KEYS) + list(extra)
    if len(config) > MAX_KEYS:
        return [f"config has {len(config)} fields; a job has at most {len(known)} "
                f"(see /get_preset for them)"]
    problems = []
    for key in config:
        if key in known:
            continue
        near = difflib.get_close_matches(str(key)[:64], known, n=1, cutoff=0.75)
        hint = f" (did you mean {near[0]}?)" if near else ""
        problems.append(f"unknown field {shorten(key)}{hint}")
    return problems


def validate_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Coerce and range-check every schema field present in `config`; collect every problem."""
    problems = check_keys(config)
    clean: dict[str, Any] = {}
    for name, value in config.items():
        if name not in SCHEMA:
            continue
        try:
            clean[name] = coerce_field(name, value)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return clean


def check_combinations(config: dict[str, Any]) -> None:
    """Rules that involve more than one field."""
    problems = []
    method = config["method"]
    fmt = config["dataset_format"]
    if fmt != AUTO and fmt not in METHOD_FORMATS[method]:
        problems.append(f"dataset_format {fmt} does not suit method {method} "
                        f"(allowed: {', '.join(METHOD_FORMATS[method])})")
    if method == "dpo" and config["packing"]:
        problems.append("packing applies to SFT only; set packing: false for dpo")
    if config["assistant_only_loss"] and method != "sft":
        problems.append("assistant_only_loss applies to SFT only")
    if config["max_steps"] == 0:
        problems.append("max_steps must be -1 (train num_train_epochs) or a positive number")
    if config["lora_target_modules"] != "all-linear":
        names = [m.strip() for m in config["lora_target_modules"].split(",")]
        if not all(names):
            problems.append("lora_target_modules must be all-linear or comma-separated module names")
    if problems:
        raise ConfigError(problems)
