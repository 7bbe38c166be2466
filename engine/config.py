"""The one schema of a job's config.

pydantic dataclasses, one per concern (the job, its data, adapter, training, performance,
evaluation, checkpoints), each field declared once with its type, bounds (`ge`, `le`, `gt`,
`max_length`), `Literal` choices, help text and the form's words for it. The same schema
validates submissions, labels the UI's widgets and the API docs, and is what the trainer reads.
Rules between fields sit after the concern they belong to. Field names follow TRL/transformers
where one exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from engine.methods import METHOD_FORMATS, METHOD_NAMES, METHODS, methods_help
from engine.schema import (
    AUTO,
    ConfigError,
    Problem,
    admits_auto,
    admits_none,
    choices_of,
    closest_name,
    kind_of,
    number_text,
    refusal,
    shorten,
)

# ---- the kinds of value a field holds ------------------------------------------------------------


def _word(value: Any) -> Any:
    """Text as typed, without its surrounding spaces; "AUTO" is "auto"."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    return AUTO if value.lower() == AUTO else value


def _number(value: Any) -> Any:
    """A number may come as text ("2e-4", "10"); a flag is never a number (True is an int in
    Python)."""
    if isinstance(value, bool):
        raise PydanticCustomError("flag_not_number", "a flag is not a number")
    value = _word(value)
    if isinstance(value, str) and value != AUTO:
        try:
            return float(value)  # "1e3" is 1000 steps; the int type refuses a fraction
        except ValueError:
            pass
    return value


def _one_line(text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise PydanticCustomError("one_line", "must be one line of text without control "
                                  "characters", {"rule": True})
    return text


Text = Annotated[str, AfterValidator(_one_line)]
Whole = Annotated[int, BeforeValidator(_number)]
Real = Annotated[float, BeforeValidator(_number)]
Flag = Annotated[bool, BeforeValidator(_word)]
Auto = Annotated[Literal["auto"], BeforeValidator(_word)]
AutoFlag = Flag | Auto
Method = Annotated[Literal[METHOD_NAMES], BeforeValidator(_word)]
Format = Literal["messages", "instruction", "prompt_completion", "text", "preference",
                 "unpaired_preference"]
DatasetFormat = Annotated[Literal["auto"] | Format, BeforeValidator(_word)]
PackingStrategy = Annotated[Literal["bfd", "wrapped"], BeforeValidator(_word)]
Adapter = Annotated[Literal["lora", "qlora", "full"], BeforeValidator(_word)]
Scheduler = Annotated[Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                              "constant_with_warmup", "inverse_sqrt", "warmup_stable_decay"],
                      BeforeValidator(_word)]
Optimizer = Annotated[Literal["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit",
                              "paged_adamw_8bit", "adafactor", "sgd"], BeforeValidator(_word)]
Precision = Annotated[Literal["auto", "fp32", "bf16", "fp16"], BeforeValidator(_word)]
Attention = Annotated[Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"],
                      BeforeValidator(_word)]

FORMATS: tuple[str, ...] = get_args(Format)
OPTIMIZERS = choices_of(Optimizer)
SCHEDULERS = choices_of(Scheduler)
ADAPTERS = choices_of(Adapter)
LORA = ("lora", "qlora")
TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")

# Upper bounds, with the reasoning: generous for real work, finite for everything.
MAX_STEPS = 10_000_000  # a week at 16 steps/s
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's seed range: the trainer seeds numpy too
MAX_PRIORITY = 1000
MAX_NAME_CHARS = 200
MAX_PATH_CHARS = 1024
MAX_KEYS = 100  # a config has about 50 fields; more keys than this is not a config

# Counts every field of that kind shares.
Steps = Annotated[Whole, Field(ge=1, le=MAX_STEPS)]  # an interval, in optimizer steps
Batch = Annotated[Whole, Field(ge=1, le=MAX_BATCH)]  # examples, or forward passes, per step

# Unknown keys refused; numbers finite; text without surrounding spaces.
SETTINGS = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True,
                      defer_build=True)


def spec(default: Any, label: str, help: str, group: str, *, advanced: bool = False,
         arg: str | None = None, methods: tuple[str, ...] | None = None,
         adapters: tuple[str, ...] | None = None, form: bool = True, **bounds: Any) -> Any:
    """A field: its default, the form's words for it (`label`; the field name shows as a hint)
    and `help`, and pydantic's `bounds` (every number and text has an upper one: a shared console
    must not accept a value no trainer, store or client can handle). `advanced` puts the widget
    in the form's advanced section. `arg`: the TRL/transformers training argument that takes the
    value as it is. `methods`/`adapters`: the only ones the field applies to (None: all).
    `form=False`: not a form field (set by TrainDeck itself)."""
    return Field(default, description=help, **bounds, json_schema_extra={
        "label": label, "group": group, "advanced": advanced, "arg": arg, "methods": methods,
        "adapters": adapters, "form": form})


def group(name: str, *, advanced: bool = False) -> Callable[..., Any]:
    """`spec` for the fields of one form group, which is named once; `advanced`: the group's
    default for its fields."""
    def field_of_group(default: Any, label: str, help: str, **options: Any) -> Any:
        return spec(default, label, help, name, **{"advanced": advanced, **options})
    return field_of_group


JOB, DATA, ADAPTER, TRAINING = group("job"), group("data"), group("adapter"), group("training")
PERFORMANCE = group("performance", advanced=True)
EVALUATION = group("evaluation")
CHECKPOINTS = group("checkpoints", advanced=True)


Rule = Callable[[Any], Iterator[Problem]]  # a rule between fields: what it finds wrong


@dataclass(frozen=True, config=SETTINGS)
class JobSettings:
    """Who runs the job, where, and how it is watched."""

    preset: Text = JOB("",
        "Template", "The template the job started from.", max_length=100, form=False)
    name: Text = JOB("",
        "Job name", "A label for the job. Empty: the preset's name and the submit time.",
        max_length=MAX_NAME_CHARS)
    priority: Whole = JOB(0,
        "Priority", "Higher starts first; equal priorities start in submit order.",
        ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    gpus: Whole = JOB(1,
        "GPUs", "GPUs for this job. More than one trains data-parallel (DDP through torchrun, one "
        "process per GPU; the batch size is per GPU).", ge=1, le=64)
    nodes: Whole = JOB(1,
        "Nodes", "Machines for this job, each with `gpus` GPUs (on a Slurm cluster only; one "
        "torchrun per node).", ge=1, le=64, advanced=True)
    preempt: Flag = JOB(False,
        "Preempt lower-priority jobs", "Admins only: when this job cannot start, pause the "
        "lowest-priority running job (exactly, with a checkpoint) to make room; that job resumes "
        "by itself when room frees up.", advanced=True)
    timeout_minutes: Real = JOB(10.0,
        "Timeout without progress (min)", "Kill the trainer and mark the job failed (resumable) "
        "after this long without progress.", gt=0, le=7 * 24 * 60, advanced=True)
    notify_url: Text = JOB("",
        "Notify URL", "A webhook this job POSTs to when it completes, fails, is cancelled or "
        "preempted, or its micro-batch is lowered (besides the console's --notify-url).",
        max_length=1000, advanced=True)
    max_retries: Whole = JOB(0,
        "Retries after a crash", "Re-queue a crashed job from its last checkpoint up to this many "
        "times.", ge=0, le=10, advanced=True)
    seed: Whole = JOB(42,
        "Seed", "Seeds weights of new layers, dropout and data order; same seed, same run.",
        ge=0, le=MAX_SEED, advanced=True, arg="seed")


def job_rules(config: JobConfig) -> Iterator[Problem]:
    if config.notify_url and (problem := url_problem(config.notify_url, "notify_url")):
        yield Problem(problem, ("notify_url",))


@dataclass(frozen=True, config=SETTINGS)
class DataSettings:
    """What the job trains on, and how examples are shaped."""

    method: Method = DATA("sft", "Method", methods_help())
    model: Text = DATA("",
        "Model", "A local model folder or a Hugging Face Hub id. Empty: the embedded tiny model.",
        max_length=MAX_PATH_CHARS)
    dataset: Text = DATA("",
        "Dataset", "A local .jsonl/.json/.csv/.parquet file or a Hub dataset id. Empty: the "
        "preset's shipped sample.", max_length=MAX_PATH_CHARS)
    dataset_format: DatasetFormat = DATA(AUTO,
        "Dataset format", "How rows are shaped; auto detects it from the columns.")
    max_length: Whole = DATA(512,
        "Max tokens per example", "Tokens per example; longer examples are truncated.",
        ge=8, le=131072, arg="max_length")
    packing: Flag = DATA(False,
        "Pack short examples", "Pack several short examples into each max_length sequence.",
        advanced=True, arg="packing", methods=("sft",))
    packing_strategy: PackingStrategy = DATA("bfd",
        "Packing strategy", "bfd: whole examples, best-fit decreasing into max_length bins, "
        "trained padding-free. wrapped: one stream cut every max_length tokens (examples split "
        "across sequences).", advanced=True, arg="packing_strategy", methods=("sft",))
    assistant_only_loss: Flag = DATA(False,
        "Learn from assistant turns only", "Chat data: the loss counts only the assistant's "
        "turns.", advanced=True, arg="assistant_only_loss", methods=("sft",))


def data_rules(config: JobConfig) -> Iterator[Problem]:
    method, fmt = config.method, config.dataset_format
    if fmt != AUTO and fmt not in METHOD_FORMATS[method]:
        yield Problem(f"dataset_format {fmt} does not suit method {method} "
                      f"(allowed: {', '.join(METHOD_FORMATS[method])})",
                      ("dataset_format", "method"))
    if method != "sft" and config.packing:
        yield Problem(f"packing applies to SFT only; set packing: false for {method}",
                      ("packing", "method"))
    if config.assistant_only_loss and method != "sft":
        yield Problem("assistant_only_loss applies to SFT only", ("assistant_only_loss", "method"))


@dataclass(frozen=True, config=SETTINGS)
class AdapterSettings:
    """Which weights train: a LoRA adapter, or all of them."""

    adapter: Adapter = ADAPTER("lora",
        "Adapter", "lora: small trainable matrices on a frozen model. qlora: the same on a 4-bit "
        "frozen model (meant for a GPU). full: train every weight.")
    lora_r: Whole = ADAPTER(16,
        "LoRA rank", "Capacity of the adapter.", ge=1, le=1024, adapters=LORA)
    lora_alpha: Whole = ADAPTER(32,
        "LoRA alpha", "Scale numerator; the update is scaled by lora_alpha / lora_r.",
        ge=1, le=8192, adapters=LORA)
    lora_dropout: Real = ADAPTER(0.05,
        "LoRA dropout", "Dropout on the adapter's input.", ge=0, le=0.9,
        advanced=True, adapters=LORA)
    lora_target_modules: Text = ADAPTER("all-linear",
        "LoRA target modules", "Layers that get adapters: all-linear, or comma-separated module "
        "names (q_proj,v_proj).", max_length=1000, advanced=True, adapters=LORA)


def adapter_rules(config: JobConfig) -> Iterator[Problem]:
    if config.lora_target_modules != "all-linear":
        if not all(m.strip() for m in config.lora_target_modules.split(",")):
            yield Problem("lora_target_modules must be all-linear or comma-separated module names",
                          ("lora_target_modules",))


@dataclass(frozen=True, config=SETTINGS)
class TrainingSettings:
    """The optimisation: steps, batch, learning rate, precision."""

    learning_rate: Real = TRAINING(2e-4,
        "Learning rate", "Peak learning rate.", gt=0, le=1, arg="learning_rate")
    num_train_epochs: Real = TRAINING(1.0,
        "Epochs", "Passes over the dataset (ignored when max_steps > 0).", gt=0,
        le=1000, arg="num_train_epochs")
    max_steps: Whole = TRAINING(-1,
        "Max steps", "Optimizer steps to run; -1 runs num_train_epochs.", ge=-1,
        le=MAX_STEPS, arg="max_steps")
    per_device_train_batch_size: Batch = TRAINING(8,
        "Batch size per device", "Examples per forward pass on each device.",
        arg="per_device_train_batch_size")
    gradient_accumulation_steps: Batch = TRAINING(1,
        "Gradient accumulation", "Forward passes per optimizer step; effective batch = batch size "
        "x this x devices.", arg="gradient_accumulation_steps")
    lr_scheduler_type: Scheduler = TRAINING("cosine",
        "LR schedule", "How the learning rate changes over the run.",
        advanced=True, arg="lr_scheduler_type")
    warmup_steps: Real = TRAINING(0.03,
        "Warm-up", "Linear warm-up: a step count, or a fraction of the run when below 1.",
        ge=0, le=MAX_STEPS, advanced=True, arg="warmup_steps")
    weight_decay: Real = TRAINING(0.0,
        "Weight decay", "AdamW weight decay.", ge=0, le=10, advanced=True, arg="weight_decay")
    max_grad_norm: Real = TRAINING(1.0,
        "Gradient clipping", "Clip gradients to this norm; 0 disables clipping.",
        ge=0, le=1e6, advanced=True, arg="max_grad_norm")
    optim: Optimizer = TRAINING(AUTO,
        "Optimizer", "auto picks fused AdamW.", advanced=True, arg="optim")
    precision: Precision = TRAINING(AUTO,
        "Precision", "Compute precision; auto picks bf16 on GPUs that support it, fp16 on older "
        "ones, fp32 on the CPU.", advanced=True)
    gradient_checkpointing: AutoFlag = TRAINING(AUTO,
        "Gradient checkpointing", "Recompute activations in the backward pass: less memory, "
        "about 20% slower. auto: on when the model's training memory, estimated from its size, "
        "batch and length, would not fit the GPU without it; off on a CPU.",
        advanced=True, arg="activation_checkpointing")
    beta: Real = TRAINING(0.1,
        "Beta", "How far the policy may move from the reference model (higher = closer).",
        gt=0, le=100, advanced=True, arg="beta", methods=("dpo", "kto"))
    desirable_weight: Real = TRAINING(1.0,
        "Desirable weight", "KTO: weight of the loss on desirable answers. With fewer desirable "
        "than undesirable answers, raise it so that desirable x this is about undesirable x "
        "undesirable_weight (TRL's advice: a ratio within 1 to 4/3).",
        gt=0, le=100, advanced=True, arg="desirable_weight", methods=("kto",))
    undesirable_weight: Real = TRAINING(1.0,
        "Undesirable weight", "KTO: weight of the loss on undesirable answers.",
        gt=0, le=100, advanced=True, arg="undesirable_weight", methods=("kto",))


def training_rules(config: JobConfig) -> Iterator[Problem]:
    if config.max_steps == 0:
        yield Problem("max_steps must be -1 (train num_train_epochs) or a positive number",
                      ("max_steps",))
    least = METHODS[config.method].min_batch
    if config.per_device_train_batch_size < least:
        yield Problem(f"{config.method} needs per_device_train_batch_size {least} or more (kto: "
                      f"its KL term pairs each answer with another prompt of the same batch)",
                      ("per_device_train_batch_size", "method"))


@dataclass(frozen=True, config=SETTINGS)
class PerformanceSettings:
    """How fast it runs: data loading and kernels (never what it learns)."""

    # A number that may be "auto" has its bounds on the number.
    dataloader_num_workers: Annotated[Whole, Field(ge=0, le=64)] | Auto = PERFORMANCE(AUTO,
        "Data-loader workers", "Processes preparing batches; auto chooses from the CPU count and "
        "whether there is a GPU.", arg="dataloader_num_workers")
    dataloader_prefetch_factor: Annotated[Whole, Field(ge=1, le=64)] | Auto | None = PERFORMANCE(
        AUTO,
        "Prefetch per worker", "Batches each worker prepares ahead; auto: 2 with workers, none "
        "without.", arg="dataloader_prefetch_factor")
    group_by_length: Flag = PERFORMANCE(False,
        "Group by length", "Batch examples of similar length together to waste less compute on "
        "padding (not for kto, whose batches keep the dataset's order).",
        methods=("sft", "dpo", "reward"))
    padding_free: AutoFlag = PERFORMANCE(AUTO,
        "Padding-free batches", "Concatenate a batch's examples into one sequence instead of "
        "padding each to the longest: no compute spent on pad tokens. auto: on where every "
        "example provably attends only to itself (FlashAttention, or SDPA/eager in a transformers "
        "that masks packed sequences by their positions) and TRL supports it for the method.",
        arg="padding_free", methods=("sft", "dpo"))
    attn_implementation: Attention = PERFORMANCE(AUTO,
        "Attention kernel", "auto: FlashAttention-2 when the flash-attn package and the GPU "
        "support it, else PyTorch's SDPA.")
    use_liger_kernel: AutoFlag = PERFORMANCE(AUTO,
        "Liger kernels", "Fused Triton kernels for the loss, norms and MLP (less memory, faster). "
        "auto: on with CUDA when liger-kernel is installed (pip install -e '.[gpu]').",
        arg="use_liger_kernel")


@dataclass(frozen=True, config=SETTINGS)
class EvaluationSettings:
    """What the job evaluates on, how often, and when it stops early."""

    eval_dataset: Text = EVALUATION("",
        "Evaluation dataset", "Held-out examples to evaluate on: a local file or a Hub dataset id "
        "in the training data's format. Empty: none (or eval_split).", max_length=MAX_PATH_CHARS)
    eval_split: Real = EVALUATION(0.0,
        "Hold out for evaluation", "Examples kept out of training to evaluate on: a fraction of "
        "the dataset when below 1, else a row count; chosen by the seed. 0: none.",
        ge=0, le=MAX_STEPS)
    eval_steps: Steps | Auto = EVALUATION(AUTO,
        "Evaluate every (steps)", "Evaluate every this many optimizer steps; auto: at every "
        "checkpoint. Checkpoints are ranked by the evaluation loss, so save_steps must be a "
        "multiple of it.", advanced=True)
    early_stopping_patience: Whole = EVALUATION(0,
        "Early stopping patience", "Stop the job (completed) when the evaluation loss has not "
        "improved for this many evaluations in a row. 0: never.", ge=0, le=1000, advanced=True)


def evaluation_rules(config: JobConfig) -> Iterator[Problem]:
    if config.eval_dataset and config.eval_split:
        yield Problem("eval_split and eval_dataset: choose one place to evaluate on (set "
                      "eval_split to 0, or eval_dataset empty)", ("eval_split", "eval_dataset"))
    if config.eval_split > 1 and not float(config.eval_split).is_integer():
        yield Problem(f"eval_split must be a fraction below 1 or a whole row count, got "
                      f"{number_text(config.eval_split)}", ("eval_split",))
    if config.early_stopping_patience and not config.evaluates:
        yield Problem("early_stopping_patience needs an evaluation: set eval_split or "
                      "eval_dataset", ("early_stopping_patience",))
    if config.evaluates and config.eval_steps != AUTO and config.save_steps % config.eval_steps:
        yield Problem(f"save_steps ({config.save_steps}) must be a multiple of eval_steps "
                      f"({config.eval_steps}): every checkpoint is ranked by its evaluation loss",
                      ("save_steps", "eval_steps"))


@dataclass(frozen=True, config=SETTINGS)
class CheckpointSettings:
    """What the job writes as it goes: metrics, checkpoints, trackers."""

    logging_steps: Steps = CHECKPOINTS(1,
        "Log every (steps)", "Record metrics every this many optimizer steps.", arg="logging_steps")
    save_steps: Steps = CHECKPOINTS(100,
        "Checkpoint every (steps)", "Write a checkpoint every this many optimizer steps (pausing "
        "always writes one).", arg="save_steps")
    save_total_limit: Whole = CHECKPOINTS(3,
        "Checkpoints kept", "Keep at most this many checkpoints; 0 keeps all.", ge=0, le=1000)
    report_to: Text = CHECKPOINTS("none",
        "Experiment trackers", "Also log to: none, or any of tensorboard, mlflow, wandb, trackio "
        "(comma-separated; pip install -e '.[tracking]').", max_length=100)


def checkpoint_rules(config: JobConfig) -> Iterator[Problem]:
    names = [name.strip() for name in config.report_to.split(",")]
    unknown = [name for name in names if name not in TRACKERS + ("none",)]
    if unknown:
        yield Problem(f"report_to: {shorten(unknown[0])} is not a tracker; use none, or any of "
                      f"{', '.join(TRACKERS)} separated by commas", ("report_to",))
    elif "none" in names and len(names) > 1:
        yield Problem("report_to: none cannot be combined with trackers", ("report_to",))
    elif len(set(names)) < len(names):
        yield Problem("report_to: a tracker is named twice", ("report_to",))


RULES: tuple[Rule, ...] = (job_rules, data_rules, adapter_rules, training_rules,
                           evaluation_rules, checkpoint_rules)


# Dataclasses take fields from the last base first: these bases are the form's order reversed.
@dataclass(frozen=True, config=SETTINGS)
class JobConfig(CheckpointSettings, EvaluationSettings, PerformanceSettings, TrainingSettings,
                AdapterSettings, DataSettings, JobSettings):
    """A job's complete config. Instances come from `engine.resolve.resolve` (every `auto`
    replaced by what the machine calls for) or from a stored record (`from_dict`); code reads
    attributes, never dict keys."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobConfig:
        """A stored config as it is (known fields; missing ones take the defaults). Not
        validated again, as before pydantic: validation is resolve()'s job, and a record written
        under older bounds must still open."""
        config = object.__new__(cls)
        for name, field in SCHEMA.items():
            object.__setattr__(config, name, data[name] if name in data else field.default)
        return config

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCHEMA}

    def replace(self, **changes: Any) -> JobConfig:
        """A copy with `changes` (values resolve() chose, or the trainer's own): as read back,
        not validated again."""
        if unknown := set(changes) - set(SCHEMA):
            raise TypeError(f"JobConfig has no field {', '.join(sorted(unknown))}")
        return self.from_dict({**self.to_dict(), **changes})

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
        return {SCHEMA[name].arg: getattr(self, name) for name in _TRAINER_FIELDS
                if self.applies(name)}


# ---- what the form, the API docs and the trainer read of each field ------------------------------


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """A field as declared: its default, value type (`kind`; `auto`: a number or flag that also
    admits "auto", `none`: admits null), choices and bounds, and the form's words for it."""

    name: str
    default: Any
    kind: type
    choices: tuple[Any, ...]
    auto: bool
    none: bool
    label: str
    help: str
    group: str
    advanced: bool
    arg: str | None
    methods: tuple[str, ...] | None
    adapters: tuple[str, ...] | None
    form: bool


def _field_spec(name: str, info: Any) -> FieldSpec:
    kind = info.annotation
    return FieldSpec(name=name, default=info.default, kind=kind_of(kind), choices=choices_of(kind),
                     auto=admits_auto(kind), none=admits_none(kind), help=info.description,
                     **info.json_schema_extra)


SCHEMA = {name: _field_spec(name, info) for name, info in JobConfig.__pydantic_fields__.items()}
_TRAINER_FIELDS = tuple(name for name, f in SCHEMA.items() if f.arg)
FORM_FIELDS = tuple(name for name, f in SCHEMA.items() if f.form)
_FIELDS = TypeAdapter(JobConfig)


def field_applies(name: str, method: str, adapter: str) -> bool:
    field = SCHEMA[name]
    return ((field.methods is None or method in field.methods)
            and (field.adapters is None or adapter in field.adapters))


def default_config() -> dict[str, Any]:
    return {name: field.default for name, field in SCHEMA.items()}


def field_type(name: str) -> type:
    """The field's value type (str for a choice); a number or flag may also admit "auto"."""
    return SCHEMA[name].kind


# ---- checking a submission ----------------------------------------------------------------------


def validate_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The fields present in `config`, in their schema types; a ConfigError lists every problem,
    each carrying its field. Rules between fields wait for the whole config (check_combinations):
    a submission's fields override a preset's."""
    if len(config) > MAX_KEYS:
        raise ConfigError(too_many_keys(config))
    try:
        validated = _FIELDS.validate_python(config)
    except ValidationError as exc:
        raise refusal(exc, JobConfig) from None
    return {name: getattr(validated, name) for name in config}


def coerce_field(name: str, value: Any) -> Any:
    """One submitted value in its schema type, or a ConfigError naming the field."""
    return validate_fields({name: value})[name]


def check_combinations(config: JobConfig) -> None:
    """The rules between fields, on a whole config."""
    problems = [problem for rule in RULES for problem in rule(config)]
    if problems:
        raise ConfigError(problems)


def too_many_keys(config: dict[str, Any]) -> str:
    return (f"config has {len(config)} fields; a job has at most {len(SCHEMA)} "
            f"(see /get_preset for them)")


def check_keys(config: dict[str, Any], extra: tuple[str, ...] = ()) -> list[str]:
    """Problems with unknown keys, each with the nearest known name when there is one (for
    documents that hold config fields beside their own keys: presets, sweeps)."""
    if len(config) > MAX_KEYS:
        return [too_many_keys(config)]
    known = list(SCHEMA) + list(extra)
    return [f"unknown field {shorten(key)}{closest_name(key, known)}" for key in config
            if key not in known]


def url_problem(url: str, field_name: str) -> str | None:
    """What is wrong with a webhook URL (None: an http(s) URL with a host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{field_name} must be an http:// or https:// URL, got {shorten(url)}"
    return None


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's "\\ud800" decodes to one): no file, path
    or JSON response can hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
