"""The trainer's heavy half: the model and its adapter, the data, and the TRL trainer, built from
a job's config. Importing this module imports torch, transformers, TRL and datasets (seconds), so
engine.trainer.run imports it only once the job file has been read and found valid."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import trl
from datasets import Dataset
from transformers import AutoTokenizer, BitsAndBytesConfig
from transformers.trainer_callback import PrinterCallback

from engine.config import JobConfig
from engine.data import DatasetError, load_local, load_rows, split_rows
from engine.jobfiles import JobPaths
from engine.methods import METHODS
from engine.trainer.faults import faults
from engine.trainer.heartbeat import Heartbeat
from engine.trainer.hooks import (
    ControlRequests,
    EarlyStopping,
    MetricsWriter,
    TrainDeckTrainerMixin,
    injected_faults,
)
from engine.trainer.models import torch_dtype
from engine.trainer.trackers import PROJECT

transformers.logging.set_verbosity_warning()
transformers.logging.disable_progress_bar()
# Deprecation notices about the libraries' own internals: nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning)
datasets.disable_progress_bars()  # bars redraw with carriage returns: noise in a log file


@dataclass
class ModelSetup:
    tokenizer: Any
    init_kwargs: dict[str, Any]  # how TRL loads the model: dtype, device map
    quantization: Any            # BitsAndBytesConfig for QLoRA, else None
    peft: Any                    # LoraConfig, or None for a full fine-tune


def world() -> tuple[int, int, bool]:
    """(rank, world size, whether CUDA is there) of this process."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            torch.cuda.is_available())


def announce_rank() -> None:
    """Under DDP each rank says who it is, so the log shows every rank started."""
    rank, world_size, has_cuda = world()
    if world_size > 1:
        device = f"GPU {os.environ.get('LOCAL_RANK', '0')}" if has_cuda else "CPU (gloo)"
        print(f"rank {rank} of {world_size}: pid {os.getpid()}, {device}", flush=True)


def model_and_adapter(config: JobConfig) -> ModelSetup:
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; it is masked out anyway
    dtype = torch_dtype(config.precision)
    # Frozen base weights may live in the compute dtype (half the memory); a fully trained model
    # keeps fp32 master weights and runs its maths in autocast.
    init_kwargs: dict[str, Any] = {"dtype": torch.float32 if config.adapter == "full" else dtype,
                                   "attn_implementation": config.attn_implementation}
    quantization = None
    if config.adapter == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        if torch.cuda.is_available():
            init_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    peft = None
    if config.adapter in ("lora", "qlora"):
        from peft import LoraConfig  # peft pulls bitsandbytes in: only adapter jobs pay for it

        targets = config.lora_target_modules
        peft = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout,
                          task_type=METHODS[config.method].task_type,
                          target_modules=targets if targets == "all-linear"
                          else [t.strip() for t in targets.split(",")])
    return ModelSetup(tokenizer, init_kwargs, quantization, peft)


@dataclass
class Data:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None  # None: the job does not evaluate
    key: str  # of the content of both, and of the split: the tokenized cache's key

    def describe(self) -> str:
        held = f" ({len(self.eval)} to evaluate on)" if self.eval is not None else ""
        return f"dataset: {len(self.train)} rows to train on{held}"


def read_data(config: JobConfig) -> Data:
    """The training rows, and the evaluation rows: held out of them by the seed (eval_split), or
    read from eval_dataset."""
    rows, key = read_rows(config.dataset, config)
    if config.eval_split:
        train, held = split_rows(rows, config.eval_split, config.seed)
        return Data(train, held, f"{key}|held-out:{config.eval_split}:{config.seed}")
    if config.eval_dataset:
        held, eval_key = read_rows(config.eval_dataset, config)
        return Data(rows, held, f"{key}|eval:{eval_key}")
    return Data(rows, None, key)


def read_rows(location: str, config: JobConfig) -> tuple[list[dict[str, Any]], str]:
    """Every row, validated and converted, and a key of the data's content for the cache."""
    if Path(location).is_absolute() or Path(location).exists():
        summary, rows = load_local(location, config.dataset_format, config.method)
        return rows, summary.fingerprint
    from datasets import load_dataset

    try:
        dataset = load_dataset(location, split="train")
    except Exception as exc:
        raise DatasetError(f"dataset {location}: cannot be loaded from the Hub ({exc})") from None
    records = ((f"row {i}", record) for i, record in enumerate(dataset, start=1))
    _, rows = load_rows(records, location, config.dataset_format, config.method)
    return rows, f"hub:{location}:{dataset._fingerprint}"


def tokenization_key(config: JobConfig, data_key: str) -> str:
    """Everything that changes the tokenized dataset, hashed: same key, same tokens."""
    tokenizer_files = sorted(
        (name, hashlib.sha256(p.read_bytes()).hexdigest())
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                     "special_tokens_map.json", "tokenizer.model")
        if (p := Path(config.model) / name).exists())
    material = {
        "data": data_key, "tokenizer": tokenizer_files or config.model, "trl": trl.__version__,
        **{k: getattr(config, k) for k in ("method", "dataset_format", "max_length", "packing",
                                           "packing_strategy", "assistant_only_loss",
                                           "padding_free")},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def training_arguments(config: JobConfig, paths: JobPaths, model: ModelSetup,
                       run_name: str | None = None):
    """TRL's config for the job: the schema's same-named fields, and the few that TrainDeck maps
    or decides itself."""
    _, world_size, has_cuda = world()
    precision = config.precision
    settings = dict(
        **config.trainer_args(),
        output_dir=str(paths.root),
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=True if has_cuda and precision != "fp32"
        and torch.cuda.get_device_capability()[0] >= 8 else None,
        dataloader_persistent_workers=config.dataloader_num_workers > 0,
        dataloader_pin_memory=has_cuda,
        train_sampling_strategy=METHODS[config.method].sampling
        or ("group_by_length" if config.group_by_length else "random"),
        logging_strategy="steps",
        save_strategy="steps",
        eval_strategy="steps" if config.evaluates else "no",
        eval_steps=config.eval_steps if config.evaluates else None,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        save_total_limit=config.save_total_limit or None,
        model_init_kwargs=model.init_kwargs,
        include_num_input_tokens_seen="non_padding",
        ddp_backend=None if has_cuda or world_size == 1 else "gloo",
        ddp_find_unused_parameters=False,  # every trainable weight takes part in every step
        report_to=config.trackers or "none",
        run_name=run_name,
        project=PROJECT,
        trackio_static_space_id=False,  # local only: never a Space on the Hub
        disable_tqdm=True,
        use_cpu=not has_cuda,
        ignore_data_skip="resume-without-state" in faults(),
    )
    if cut_by_traindeck(config):
        settings["max_length"] = None  # the examples are cut in TrainDeckTrainerMixin instead
    return getattr(trl, METHODS[config.method].config_class)(**settings)


def cut_by_traindeck(config: JobConfig) -> bool:
    """Padding-free SFT without packing: TRL wants max_length None, so TrainDeck truncates."""
    return config.method == "sft" and config.padding_free is True and not config.packing


def build_trainer(config: JobConfig, paths: JobPaths, cache_dir: Path, model: ModelSetup,
                  data: Data, heartbeat: Heartbeat, run_name: str | None = None):
    """The TRL trainer with TrainDeck's hooks; returns (trainer, its pause/cancel control)."""
    _, world_size, _ = world()
    control = ControlRequests(paths)
    samples_per_step = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                        * world_size)
    metrics = MetricsWriter(paths, heartbeat, samples_per_step)
    base = getattr(trl, METHODS[config.method].trainer)
    trainer_class = type(f"TrainDeck{base.__name__}", (TrainDeckTrainerMixin, base), {})
    stopping = [EarlyStopping(config.early_stopping_patience)] if config.early_stopping_patience \
        else []
    heartbeat.beat(force=True, phase="loading model")
    trainer = trainer_class(
        model=config.model, args=training_arguments(config, paths, model, run_name),
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.eval) if data.eval is not None else None,
        processing_class=model.tokenizer, peft_config=model.peft,
        quantization_config=model.quantization,
        callbacks=[metrics, control, *stopping, *injected_faults()], heartbeat=heartbeat,
        tokenized_cache=cache_dir / "tokenized" / tokenization_key(config, data.key),
        truncate_to=config.max_length if cut_by_traindeck(config) else None)
    trainer.remove_callback(PrinterCallback)  # MetricsWriter prints a shorter line per step
    return trainer, control
