"""The one schema of a job's config.

Each field carries its help text, group and constraints once, in `field(metadata=...)`. The same
schema validates submissions, labels the UI's widgets and is what the trainer reads. Field names
follow TRL/transformers where one exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

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


def spec(label: str, help: str, group: str, *, choices: tuple | None = None,
         minimum: float | None = None, above: float | None = None, maximum: float | None = None,
         chars: int | None = None, auto: bool = False, none: bool = False, advanced: bool = False,
         arg: str | None = None, methods: tuple[str, ...] | None = None,
         adapters: tuple[str, ...] | None = None, form: bool = True) -> dict[str, Any]:
    """Field metadata, written once and read by validation, the UI and the trainer.

    `label`: the form's words for it (the field name shows as a hint). `minimum` and `maximum` are
    inclusive, `above` exclusive; `chars` caps a text's length (every number and text has an upper
    bound: a shared console must not accept a value no trainer, store or client can handle).
    `auto` admits "auto" (resolved at submit from the machine), `none` admits null. `advanced`
    puts the widget in the form's advanced section. `arg`: the TRL/transformers training argument
    that takes the value as it is. `methods`/`adapters`: the only ones the field applies to (None:
    all). `form=False`: not a form field (set by TrainDeck itself)."""
    return {"label": label, "help": help, "group": group, "choices": choices, "minimum": minimum,
            "above": above, "maximum": maximum, "chars": chars, "auto": auto, "none": none,
            "advanced": advanced, "arg": arg, "methods": methods, "adapters": adapters,
            "form": form}


# Upper bounds, with the reasoning: generous for real work, finite for everything.
MAX_STEPS = 10_000_000  # a week at 16 steps/s
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's seed range: the trainer seeds numpy too
MAX_PRIORITY = 1000
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 1024
ADAPTERS = ("lora", "qlora", "full")
LORA = ("lora", "qlora")


class ConfigRecord:
    """What every config offers besides its fields: reading one back, copying with changes,
    and what its fields mean for its method and adapter (fields live in JobConfig)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobConfig:
        """A stored config as it is (known fields; missing ones take the defaults). Validation is
        resolve()'s job: this only reads back what was resolved before."""
        return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def replace(self, **changes: Any) -> JobConfig:
        return dataclasses.replace(self, **changes)

    @property
    def trackers(self) -> list[str]:
        return [name.strip() for name in self.report_to.split(",")
                if name.strip() and name.strip() != "none"]

    @property
    def evaluates(self) -> bool:
        return bool(self.eval_dataset or self.eval_split)

    def applies(self, name: str) -> bool:
        """Whether a field means anything for this config's method and adapter."""
        return field_applies(name, self.method, self.adapter)

    def trainer_args(self) -> dict[str, Any]:
        """The fields that are training arguments of TRL/transformers, by those names."""
        return {SCHEMA[name].metadata["arg"]: getattr(self, name) for name in _TRAINER_FIELDS
                if self.applies(name)}


@dataclass(frozen=True)
class JobConfig(ConfigRecord):
    """A job's complete config. Instances come from `engine.resolve.resolve` (every `auto`
    replaced by what the machine calls for) or from a stored record (`from_dict`); code reads
    attributes, never dict keys."""

    # ---- Job ------------------------------------------------------------------------------------
    preset: str = field(default="", metadata=spec(
        "Template", "The template the job started from.", "job", chars=100, form=False))
    name: str = field(default="", metadata=spec(
        "Job name", "A label for the job. Empty: the preset's name and the submit time.", "job",
        chars=MAX_NAME_CHARS))
    priority: int = field(default=0, metadata=spec(
        "Priority", "Higher starts first; equal priorities start in submit order.", "job",
        minimum=-MAX_PRIORITY, maximum=MAX_PRIORITY))
    gpus: int = field(default=1, metadata=spec(
        "GPUs", "GPUs for this job. More than one trains data-parallel (DDP through torchrun, one "
        "process per GPU; the batch size is per GPU).", "job", minimum=1, maximum=64))
    nodes: int = field(default=1, metadata=spec(
        "Nodes", "Machines for this job, each with `gpus` GPUs (on a Slurm cluster only; one "
        "torchrun per node).", "job", minimum=1, maximum=64, advanced=True))
    preempt: bool = field(default=False, metadata=spec(
        "Preempt lower-priority jobs", "Admins only: when this job cannot start, pause the "
        "lowest-priority running job (exactly, with a checkpoint) to make room; that job resumes "
        "by itself when room frees up.", "job", advanced=True))
    timeout_minutes: float = field(default=10.0, metadata=spec(
        "Timeout without progress (min)", "Kill the trainer and mark the job failed (resumable) "
        "after this long without progress.", "job", above=0, maximum=7 * 24 * 60, advanced=True))
    notify_url: str = field(default="", metadata=spec(
        "Notify URL", "A webhook this job POSTs to when it completes, fails, is cancelled or "
        "preempted, or its micro-batch is lowered (besides the console's --notify-url).", "job",
        chars=1000, advanced=True))
    max_retries: int = field(default=0, metadata=spec(
        "Retries after a crash", "Re-queue a crashed job from its last checkpoint up to this many "
        "times.", "job", minimum=0, maximum=10, advanced=True))
    seed: int = field(default=42, metadata=spec(
        "Seed", "Seeds weights of new layers, dropout and data order; same seed, same run.",
        "job", minimum=0, maximum=MAX_SEED, advanced=True, arg="seed"))

    # ---- Model and data -------------------------------------------------------------------------
    method: str = field(default="sft", metadata=spec(
        "Method", "sft: supervised fine-tuning on examples. dpo: preference alignment on "
        "chosen/rejected pairs.", "data", choices=tuple(METHOD_FORMATS)))
    model: str = field(default="", metadata=spec(
        "Model", "A local model folder or a Hugging Face Hub id. Empty: the embedded tiny model.",
        "data", chars=MAX_PATH_CHARS))
    dataset: str = field(default="", metadata=spec(
        "Dataset", "A local .jsonl/.json/.csv/.parquet file or a Hub dataset id. Empty: the "
        "preset's shipped sample.", "data", chars=MAX_PATH_CHARS))
    dataset_format: str = field(default=AUTO, metadata=spec(
        "Dataset format", "How rows are shaped; auto detects it from the columns.", "data",
        choices=(AUTO,) + FORMATS))
    max_length: int = field(default=512, metadata=spec(
        "Max tokens per example", "Tokens per example; longer examples are truncated.", "data",
        minimum=8, maximum=131072, arg="max_length"))
    packing: bool = field(default=False, metadata=spec(
        "Pack short examples", "Pack several short examples into each max_length sequence.",
        "data", advanced=True, arg="packing", methods=("sft",)))
    packing_strategy: str = field(default="bfd", metadata=spec(
        "Packing strategy", "bfd: whole examples, best-fit decreasing into max_length bins, "
        "trained padding-free. wrapped: one stream cut every max_length tokens (examples split "
        "across sequences).", "data", choices=("bfd", "wrapped"), advanced=True,
        arg="packing_strategy", methods=("sft",)))
    assistant_only_loss: bool = field(default=False, metadata=spec(
        "Learn from assistant turns only", "Chat data: the loss counts only the assistant's "
        "turns.", "data", advanced=True, arg="assistant_only_loss", methods=("sft",)))

    # ---- Adapter --------------------------------------------------------------------------------
    adapter: str = field(default="lora", metadata=spec(
        "Adapter", "lora: small trainable matrices on a frozen model. qlora: the same on a 4-bit "
        "frozen model (meant for a GPU). full: train every weight.", "adapter", choices=ADAPTERS))
    lora_r: int = field(default=16, metadata=spec(
        "LoRA rank", "Capacity of the adapter.", "adapter", minimum=1, maximum=1024,
        adapters=LORA))
    lora_alpha: int = field(default=32, metadata=spec(
        "LoRA alpha", "Scale numerator; the update is scaled by lora_alpha / lora_r.", "adapter",
        minimum=1, maximum=8192, adapters=LORA))
    lora_dropout: float = field(default=0.05, metadata=spec(
        "LoRA dropout", "Dropout on the adapter's input.", "adapter", minimum=0, maximum=0.9,
        advanced=True, adapters=LORA))
    lora_target_modules: str = field(default="all-linear", metadata=spec(
        "LoRA target modules", "Layers that get adapters: all-linear, or comma-separated module "
        "names (q_proj,v_proj).", "adapter", chars=1000, advanced=True, adapters=LORA))

    # ---- Training -------------------------------------------------------------------------------
    learning_rate: float = field(default=2e-4, metadata=spec(
        "Learning rate", "Peak learning rate.", "training", above=0, maximum=1,
        arg="learning_rate"))
    num_train_epochs: float = field(default=1.0, metadata=spec(
        "Epochs", "Passes over the dataset (ignored when max_steps > 0).", "training", above=0,
        maximum=1000, arg="num_train_epochs"))
    max_steps: int = field(default=-1, metadata=spec(
        "Max steps", "Optimizer steps to run; -1 runs num_train_epochs.", "training", minimum=-1,
        maximum=MAX_STEPS, arg="max_steps"))
    per_device_train_batch_size: int = field(default=8, metadata=spec(
        "Batch size per device", "Examples per forward pass on each device.", "training",
        minimum=1, maximum=MAX_BATCH, arg="per_device_train_batch_size"))
    gradient_accumulation_steps: int = field(default=1, metadata=spec(
        "Gradient accumulation", "Forward passes per optimizer step; effective batch = batch size "
        "x this x devices.", "training", minimum=1, maximum=MAX_BATCH,
        arg="gradient_accumulation_steps"))
    lr_scheduler_type: str = field(default="cosine", metadata=spec(
        "LR schedule", "How the learning rate changes over the run.", "training",
        choices=SCHEDULERS, advanced=True, arg="lr_scheduler_type"))
    warmup_steps: float = field(default=0.03, metadata=spec(
        "Warm-up", "Linear warm-up: a step count, or a fraction of the run when below 1.",
        "training", minimum=0, maximum=MAX_STEPS, advanced=True, arg="warmup_steps"))
    weight_decay: float = field(default=0.0, metadata=spec(
        "Weight decay", "AdamW weight decay.", "training", minimum=0, maximum=10, advanced=True,
        arg="weight_decay"))
    max_grad_norm: float = field(default=1.0, metadata=spec(
        "Gradient clipping", "Clip gradients to this norm; 0 disables clipping.", "training",
        minimum=0, maximum=1e6, advanced=True, arg="max_grad_norm"))
    optim: str = field(default=AUTO, metadata=spec(
        "Optimizer", "auto picks fused AdamW.", "training", choices=OPTIMIZERS, advanced=True,
        arg="optim"))
    precision: str = field(default=AUTO, metadata=spec(
        "Precision", "Compute precision; auto picks bf16 on GPUs that support it, fp16 on older "
        "ones, fp32 on the CPU.", "training", choices=(AUTO, "fp32", "bf16", "fp16"),
        advanced=True))
    gradient_checkpointing: bool | str = field(default=AUTO, metadata=spec(
        "Gradient checkpointing", "Recompute activations in the backward pass: less memory, "
        "about 20% slower. auto: on when the model's training memory, estimated from its size, "
        "batch and length, would not fit the GPU without it; off on a CPU.", "training",
        auto=True, advanced=True, arg="activation_checkpointing"))
    beta: float = field(default=0.1, metadata=spec(
        "DPO beta", "How far the policy may move from the reference model (higher = closer).",
        "training", above=0, maximum=100, advanced=True, arg="beta", methods=("dpo",)))

    # ---- Performance ----------------------------------------------------------------------------
    dataloader_num_workers: int | str = field(default=AUTO, metadata=spec(
        "Data-loader workers", "Processes preparing batches; auto chooses from the CPU count and "
        "whether there is a GPU.", "performance", minimum=0, maximum=64, auto=True, advanced=True,
        arg="dataloader_num_workers"))
    dataloader_prefetch_factor: int | str | None = field(default=AUTO, metadata=spec(
        "Prefetch per worker", "Batches each worker prepares ahead; auto: 2 with workers, none "
        "without.", "performance", minimum=1, maximum=64, auto=True, none=True, advanced=True,
        arg="dataloader_prefetch_factor"))
    group_by_length: bool = field(default=False, metadata=spec(
        "Group by length", "Batch examples of similar length together to waste less compute on "
        "padding.", "performance", advanced=True))
    padding_free: bool | str = field(default=AUTO, metadata=spec(
        "Padding-free batches", "Concatenate a batch's examples into one sequence instead of "
        "padding each to the longest: no compute spent on pad tokens. auto: on where every "
        "example provably attends only to itself (FlashAttention, or SDPA/eager in a transformers "
        "that masks packed sequences by their positions) and TRL supports it for the method.",
        "performance", auto=True, advanced=True, arg="padding_free"))
    attn_implementation: str = field(default=AUTO, metadata=spec(
        "Attention kernel", "auto: FlashAttention-2 when the flash-attn package and the GPU "
        "support it, else PyTorch's SDPA.", "performance",
        choices=(AUTO, "sdpa", "eager", "flash_attention_2", "flash_attention_3"), advanced=True))
    use_liger_kernel: bool | str = field(default=AUTO, metadata=spec(
        "Liger kernels", "Fused Triton kernels for the loss, norms and MLP (less memory, faster). "
        "auto: on with CUDA when liger-kernel is installed (pip install -e '.[gpu]').",
        "performance", auto=True, advanced=True, arg="use_liger_kernel"))

    # ---- Evaluation -----------------------------------------------------------------------------
    eval_dataset: str = field(default="", metadata=spec(
        "Evaluation dataset", "Held-out examples to evaluate on: a local file or a Hub dataset id "
        "in the training data's format. Empty: none (or eval_split).", "evaluation",
        chars=MAX_PATH_CHARS))
    eval_split: float = field(default=0.0, metadata=spec(
        "Hold out for evaluation", "Examples kept out of training to evaluate on: a fraction of "
        "the dataset when below 1, else a row count; chosen by the seed. 0: none.", "evaluation",
        minimum=0, maximum=MAX_STEPS))
    eval_steps: int | str = field(default=AUTO, metadata=spec(
        "Evaluate every (steps)", "Evaluate every this many optimizer steps; auto: at every "
        "checkpoint. Checkpoints are ranked by the evaluation loss, so save_steps must be a "
        "multiple of it.", "evaluation", minimum=1, maximum=MAX_STEPS, auto=True, advanced=True))
    early_stopping_patience: int = field(default=0, metadata=spec(
        "Early stopping patience", "Stop the job (completed) when the evaluation loss has not "
        "improved for this many evaluations in a row. 0: never.", "evaluation", minimum=0,
        maximum=1000, advanced=True))

    # ---- Checkpoints and logging ----------------------------------------------------------------
    logging_steps: int = field(default=1, metadata=spec(
        "Log every (steps)", "Record metrics every this many optimizer steps.", "checkpoints",
        minimum=1, maximum=MAX_STEPS, advanced=True, arg="logging_steps"))
    save_steps: int = field(default=100, metadata=spec(
        "Checkpoint every (steps)", "Write a checkpoint every this many optimizer steps (pausing "
        "always writes one).", "checkpoints", minimum=1, maximum=MAX_STEPS, advanced=True,
        arg="save_steps"))
    save_total_limit: int = field(default=3, metadata=spec(
        "Checkpoints kept", "Keep at most this many checkpoints; 0 keeps all.", "checkpoints",
        minimum=0, maximum=1000, advanced=True))
    report_to: str = field(default="none", metadata=spec(
        "Experiment trackers", "Also log to: none, or any of tensorboard, mlflow, wandb, trackio "
        "(comma-separated; pip install -e '.[tracking]').", "checkpoints", chars=100,
        advanced=True))


SCHEMA = {f.name: f for f in fields(JobConfig)}
_FIELD_NAMES = tuple(SCHEMA)
_TRAINER_FIELDS = tuple(name for name, f in SCHEMA.items() if f.metadata["arg"])
FORM_FIELDS = tuple(name for name, f in SCHEMA.items() if f.metadata["form"])


def field_applies(name: str, method: str, adapter: str) -> bool:
    meta = SCHEMA[name].metadata
    return ((meta["methods"] is None or method in meta["methods"])
            and (meta["adapters"] is None or adapter in meta["adapters"]))
# Keys a submission may carry besides the schema's fields.
def default_config() -> dict[str, Any]:
    return {name: f.default for name, f in SCHEMA.items() if f.default is not MISSING}


def field_type(name: str) -> type:
    """The field's value type; `int | str` and `bool | str` are a number or a flag that also
    admits "auto"."""
    annotation = str(SCHEMA[name].type).split("|")[0].strip()
    return {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, object)


def coerce_field(name: str, value: Any) -> Any:
    """Turn one submitted value into its schema type, or raise ConfigError naming the field."""
    meta = SCHEMA[name].metadata
    if value is None and meta["none"]:
        return None
    if isinstance(value, str) and meta["auto"] and value.strip().lower() == AUTO:
        return AUTO
    kind = field_type(name)
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
        if not is_unicode(value):
            raise ConfigError(f"{name} must be Unicode text; it holds a lone surrogate")
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


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's "\\ud800" decodes to one): no file, path
    or JSON response can hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    known = list(SCHEMA) + list(extra)
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


def url_problem(url: str, field_name: str) -> str | None:
    """What is wrong with a webhook URL (None: an http(s) URL with a host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{field_name} must be an http:// or https:// URL, got {shorten(url)}"
    return None


TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")


def tracker_problems(config: JobConfig) -> list[str]:
    names = [name.strip() for name in config.report_to.split(",")]
    unknown = [name for name in names if name not in TRACKERS + ("none",)]
    if unknown:
        return [f"report_to: {shorten(unknown[0])} is not a tracker; use none, or any of "
                f"{', '.join(TRACKERS)} separated by commas"]
    if "none" in names and len(names) > 1:
        return ["report_to: none cannot be combined with trackers"]
    if len(set(names)) < len(names):
        return ["report_to: a tracker is named twice"]
    return []


def evaluation_problems(config: JobConfig) -> list[str]:
    problems = []
    if config.eval_dataset and config.eval_split:
        problems.append("eval_split and eval_dataset: choose one place to evaluate on (set "
                        "eval_split to 0, or eval_dataset empty)")
    if config.eval_split > 1 and not float(config.eval_split).is_integer():
        problems.append(f"eval_split must be a fraction below 1 or a whole row count, got "
                        f"{number_text(config.eval_split)}")
    evaluates = bool(config.eval_dataset or config.eval_split)
    if config.early_stopping_patience and not evaluates:
        problems.append("early_stopping_patience needs an evaluation: set eval_split or "
                        "eval_dataset")
    if evaluates and config.eval_steps != AUTO and config.save_steps % config.eval_steps:
        problems.append(f"save_steps ({config.save_steps}) must be a multiple of eval_steps "
                        f"({config.eval_steps}): every checkpoint is ranked by its evaluation loss")
    return problems


def check_combinations(config: JobConfig) -> None:
    """Rules that involve more than one field."""
    problems = []
    method, fmt = config.method, config.dataset_format
    if fmt != AUTO and fmt not in METHOD_FORMATS[method]:
        problems.append(f"dataset_format {fmt} does not suit method {method} "
                        f"(allowed: {', '.join(METHOD_FORMATS[method])})")
    if method == "dpo" and config.packing:
        problems.append("packing applies to SFT only; set packing: false for dpo")
    if config.assistant_only_loss and method != "sft":
        problems.append("assistant_only_loss applies to SFT only")
    if config.max_steps == 0:
        problems.append("max_steps must be -1 (train num_train_epochs) or a positive number")
    problems.extend(evaluation_problems(config))
    problems.extend(tracker_problems(config))
    if config.notify_url and (problem := url_problem(config.notify_url, "notify_url")):
        problems.append(problem)
    if config.lora_target_modules != "all-linear":
        names = [m.strip() for m in config.lora_target_modules.split(",")]
        if not all(names):
            problems.append("lora_target_modules must be all-linear or comma-separated module names")
    if problems:
        raise ConfigError(problems)
