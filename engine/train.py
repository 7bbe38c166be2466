"""The trainer: `python -m engine.train <job.yaml>`.

This is the exact command the console's scheduler runs, and the headless CLI. It writes into the
job folder (the folder of job.yaml, or --output-dir): training.log, metrics.jsonl,
heartbeat.json, checkpoint-N/ folders and the final model/ (an adapter for LoRA/QLoRA). Exit codes
are in engine.jobfiles: 0 completed, 1 failed, 2 invalid job, 75 paused, 76 cancelled.

job.yaml is either a job file written by the console (`config:` holds the resolved config) or a
plain config (`preset:` plus overrides), resolved here the way the console would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from engine.config import ConfigError
from engine.data import DatasetError, load_local, load_rows
from engine.heartbeat import Heartbeat
from engine.jobfiles import (CANCEL, EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, EXIT_INVALID,
                             EXIT_PAUSED, PAUSE, SUPERVISED_ENV, JobPaths, requested,
                             write_json_atomic)


# Config fields that are TrainingArguments/TRL arguments of the same name and meaning.
SAME_NAMED_ARGS = ("seed", "learning_rate", "num_train_epochs", "max_steps",
                   "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
                   "warmup_steps", "weight_decay", "max_grad_norm", "optim", "dataloader_num_workers",
                   "dataloader_prefetch_factor", "logging_steps", "save_steps", "max_length")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_file", type=Path, help="job.yaml written by the console, or a config")
    parser.add_argument("--output-dir", type=Path, help="job folder (default: job.yaml's folder)")
    parser.add_argument("--resume-from", help="checkpoint-N folder name to resume from")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = JobPaths((args.output_dir or args.job_file.parent).resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    if os.environ.get(SUPERVISED_ENV) != "1":
        return run_logged(argv if argv is not None else sys.argv[1:], paths)
    code = EXIT_FAILED
    launched_by_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    try:
        code = train(args, paths)
    except (ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = EXIT_INVALID
    finally:
        # How this process ended, for a console that re-attached to it and cannot wait() on it.
        # Under torchrun the console watches torchrun itself (this process's parent), and rank 0
        # speaks for the job.
        if int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(paths.exit_record, {
                "pid": os.getppid() if launched_by_torchrun else os.getpid(), "code": code,
                "time": time.time()})
    if launched_by_torchrun and code in (EXIT_PAUSED, EXIT_CANCELLED):
        return EXIT_COMPLETED  # torchrun takes any other code for a crash; exit.json has the truth
    return code


def run_logged(argv: list[str], paths: JobPaths) -> int:
    """Run by hand: train in a child process whose output goes both to the terminal and to
    training.log, exactly as under the console (which redirects it itself)."""
    env = {**os.environ, SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1"}
    with open(paths.log, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "engine.train", *argv], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        for line in child.stdout:
            log.write(line)
            log.flush()
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        return child.wait()


def read_job_file(job_file: Path, paths: JobPaths) -> dict[str, Any]:
    """The job's resolved config plus the console's extras (job id, resume point, cache)."""
    try:
        data = yaml.safe_load(job_file.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"job file {job_file}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"job file {job_file}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"job file {job_file}: expected a mapping")
    if "config" in data:
        return data
    # A plain config: resolve it as the console would, relative to the file's folder.
    from engine.machine import detect  # only the headless path needs presets and machine info
    from engine.presets import PresetLibrary
    from engine.resolve import resolve_submission

    resolution = resolve_submission(data, PresetLibrary(), detect(), base_dir=job_file.parent)
    return {"job_id": paths.root.name, "config": resolution.config}


def train(args: argparse.Namespace, paths: JobPaths) -> int:
    rank = int(os.environ.get("RANK", "0"))
    heartbeat = Heartbeat(paths.heartbeat if rank == 0 else None)
    heartbeat.start_background("loading")
    started = time.time()
    phases: dict[str, float] = {}

    # ---- config ---------------------------------------------------------------------------------
    job = read_job_file(args.job_file, paths)
    config = job["config"]
    resume_from = args.resume_from or job.get("resume_from")
    cache_dir = Path(job.get("cache_dir") or paths.root / ".cache")
    print(f"job {job.get('job_id', paths.root.name)}: {config['method']} {config['adapter']} "
          f"on {config['model']} with {config['dataset']}", flush=True)

    # Heavy imports only now, after the job file was read: a bad job fails in a second.
    import datasets
    import torch
    import transformers
    import trl
    from transformers import AutoTokenizer, BitsAndBytesConfig
    from transformers.trainer_callback import PrinterCallback

    from engine.trainer_hooks import (ControlRequests, MetricsWriter, TrainDeckTrainerMixin,
                                      agreed_action, faults)

    transformers.logging.set_verbosity_warning()
    transformers.logging.disable_progress_bar()
    # Deprecation notices about the libraries' own internals: nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning)
    datasets.disable_progress_bars()  # bars redraw with carriage returns: noise in a log file
    has_cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        print(f"rank {rank} of {world_size}: pid {os.getpid()}, "
              f"{'GPU ' + os.environ.get('LOCAL_RANK', '0') if has_cuda else 'CPU (gloo)'}", flush=True)

    # ---- model and adapter ----------------------------------------------------------------------
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; it is masked out anyway
    precision = config["precision"]
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    # Frozen base weights may live in the compute dtype (half the memory); a fully trained model
    # keeps fp32 master weights and runs its maths in autocast.
    model_dtype = torch.float32 if config["adapter"] == "full" else compute_dtype
    model_init_kwargs: dict[str, Any] = {"dtype": model_dtype}
    quantization = None
    if config["adapter"] == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype)
        if has_cuda:
            model_init_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    peft_config = None
    if config["adapter"] in ("lora", "qlora"):
        from peft import LoraConfig

        targets = config["lora_target_modules"]
        peft_config = LoraConfig(
            r=config["lora_r"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM")

    # ---- data -----------------------------------------------------------------------------------
    heartbeat.beat(force=True, phase="reading data")
    if Path(config["dataset"]).is_absolute() or Path(config["dataset"]).exists():
        summary, rows = load_local(config["dataset"], config["dataset_format"], config["method"])
        data_key = summary.fingerprint
    else:
        rows, data_key = load_hub_rows(config)
    print(f"dataset: {len(rows)} rows", flush=True)
    phases["load_s"] = time.time() - started

    from datasets import Dataset

    train_dataset = Dataset.from_list(rows)
    tokenized_cache = cache_dir / "tokenized" / tokenization_key(config, data_key, trl.__version__)

    # ---- trainer --------------------------------------------------------------------------------
    common = dict(
        **{name: config[name] for name in SAME_NAMED_ARGS},
        output_dir=str(paths.root),
        data_seed=config["seed"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=True if has_cuda and precision != "fp32" and torch.cuda.get_device_capability()[0] >= 8 else None,
        activation_checkpointing=config["gradient_checkpointing"],  # transformers' new name
        dataloader_persistent_workers=config["dataloader_num_workers"] > 0,
        dataloader_pin_memory=has_cuda,
        train_sampling_strategy="group_by_length" if config["group_by_length"] else "random",
        logging_strategy="steps",
        save_strategy="steps",
        save_total_limit=config["save_total_limit"] or None,
        model_init_kwargs=model_init_kwargs,
        include_num_input_tokens_seen="non_padding",
        ddp_backend=None if has_cuda or world_size == 1 else "gloo",
        ddp_find_unused_parameters=False,  # every trainable weight takes part in every step
        report_to="none",
        disable_tqdm=True,
        use_cpu=not has_cuda,
        ignore_data_skip="resume-without-state" in faults(),
    )
    control = ControlRequests(paths)
    samples_per_step = (config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
                        * world_size)
    metrics = MetricsWriter(paths, heartbeat, samples_per_step)
    if config["method"] == "dpo":
        trainer_args = trl.DPOConfig(**common, beta=config["beta"])
        trainer_class = type("TrainDeckDPOTrainer", (TrainDeckTrainerMixin, trl.DPOTrainer), {})
    else:
        trainer_args = trl.SFTConfig(**common, packing=config["packing"],
                                     assistant_only_loss=config["assistant_only_loss"])
        trainer_class = type("TrainDeckSFTTrainer", (TrainDeckTrainerMixin, trl.SFTTrainer), {})
    heartbeat.beat(force=True, phase="loading model")
    trainer = trainer_class(
        model=config["model"], args=trainer_args, train_dataset=train_dataset,
        processing_class=tokenizer, peft_config=peft_config, quantization_config=quantization,
        callbacks=[metrics, control], tokenized_cache=tokenized_cache, heartbeat=heartbeat)
    trainer.remove_callback(PrinterCallback)  # MetricsWriter prints a shorter line per step
    phases["tokenize_s"] = time.time() - started - phases["load_s"]
    early = agreed_action(requested(paths) if rank == 0 else None)
    if early == CANCEL:
        print("cancelled before training started", flush=True)
        return EXIT_CANCELLED
    if early == PAUSE:
        print("paused before training started; resume starts from the beginning", flush=True)
        return EXIT_PAUSED

    # ---- train ----------------------------------------------------------------------------------
    checkpoint = str(paths.root / resume_from) if resume_from else None
    if checkpoint:
        print(f"resuming from {resume_from}", flush=True)
    train_started = time.time()
    trainer.train(resume_from_checkpoint=checkpoint)
    phases["train_s"] = time.time() - train_started
    heartbeat.beat(force=True, phase="saving")

    if control.stopped_for == PAUSE:
        print(f"paused at step {trainer.state.global_step}", flush=True)
        return EXIT_PAUSED
    if control.stopped_for == CANCEL:
        print(f"cancelled at step {trainer.state.global_step}", flush=True)
        return EXIT_CANCELLED

    # ---- save -----------------------------------------------------------------------------------
    save_started = time.time()
    trainer.save_model(str(paths.final_model))
    phases["save_s"] = time.time() - save_started
    write_summary(paths, trainer.state, phases)
    heartbeat.beat(force=True, phase="done")
    print(f"saved {paths.final_model} after {time.time() - started:.1f}s", flush=True)
    return EXIT_COMPLETED


def load_hub_rows(config: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A Hub dataset's train split, validated like a local file."""
    from datasets import load_dataset

    try:
        dataset = load_dataset(config["dataset"], split="train")
    except Exception as exc:
        raise DatasetError(f"dataset {config['dataset']}: cannot be loaded from the Hub ({exc})") from None
    records = ((f"row {i}", record) for i, record in enumerate(dataset, start=1))
    _, rows = load_rows(records, config["dataset"], config["dataset_format"], config["method"])
    return rows, f"hub:{config['dataset']}:{dataset._fingerprint}"


def tokenization_key(config: dict[str, Any], data_key: str, trl_version: str) -> str:
    """Everything that changes the tokenized dataset, hashed: same key, same tokens."""
    tokenizer_files = sorted(
        (name, hashlib.sha256(p.read_bytes()).hexdigest())
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                     "special_tokens_map.json", "tokenizer.model")
        if (p := Path(config["model"]) / name).exists())
    material = {
        "data": data_key,
        "tokenizer": tokenizer_files or config["model"],
        "trl": trl_version,
        **{k: config[k] for k in ("method", "dataset_format", "max_length", "packing",
                                  "assistant_only_loss")},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def write_summary(paths: JobPaths, state, phases: dict[str, float]) -> None:
    from engine.jobfiles import read_json

    summary = read_json(paths.summary) or {}
    summary.update(phases)
    summary.update(global_step=state.global_step, max_steps=state.max_steps)
    write_json_atomic(paths.summary, summary)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILED)
