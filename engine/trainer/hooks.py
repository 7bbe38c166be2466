"""What the trainer adds to TRL's trainers: the heartbeat, the metrics stream, pause/cancel at
optimizer-step boundaries, checkpoint completeness markers and the tokenized-dataset cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from datasets import Dataset, load_from_disk
from transformers import TrainerCallback

from engine import nvml
from engine.atomic import write_json_atomic
from engine.jobfiles import (
    CANCEL,
    INCOMPLETE_MARKER,
    PAUSE,
    STOPPED_FOR_NOTICE,
    STOPPED_FOR_REQUEST,
    JobPaths,
    checkpoint_name,
    checkpoint_step,
    request,
    requested,
)
from engine.trainer.faults import FAULTS_ENV, faults
from engine.trainer.heartbeat import Heartbeat
from engine.trainer.preemption import PREEMPTION
from engine.trainer.trackers import remember_mlflow_run

_process: dict[int, psutil.Process] = {}


def this_process() -> psutil.Process:
    """One object per process (cpu_percent measures since its previous call), made in the
    process itself: a trainer forked from the spare must not measure, or outlive, its parent."""
    pid = os.getpid()
    if pid not in _process:
        _process.clear()
        _process[pid] = psutil.Process(pid)
    return _process[pid]


TELEMETRY_INTERVAL_S = 1.0
# What the trainer logs that is no metric of a step (the run's totals, the epoch's fraction).
NOT_METRICS = ("epoch", "num_input_tokens_seen", "train_tokens_per_second", "train_runtime")
_telemetry: dict[str, Any] = {"time": 0.0, "values": {}}


def device_telemetry(force: bool = False) -> dict[str, float]:
    """Memory and utilization of the device this process trains on, sampled at most once a
    second (psutil and NVML calls cost more than a tiny model's step); peak GPU memory is always
    current, since it is what a user sizes jobs by."""
    now = time.monotonic()
    if force or now - _telemetry["time"] >= TELEMETRY_INTERVAL_S:
        _telemetry["time"], _telemetry["values"] = now, _sample_device()
    values = dict(_telemetry["values"])
    if "gpu_mem_peak_mb" in values:
        values["gpu_mem_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return values


def _sample_device() -> dict[str, float]:
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        record = {
            "gpu_mem_allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
            "gpu_mem_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        }
        record.update(_nvml_telemetry(device))
        return record
    process = this_process()
    return {"cpu_percent": process.cpu_percent(None), "rss_mb": process.memory_info().rss / 2**20}


def _nvml_telemetry(device: int) -> dict[str, float]:
    """NVML numbers its GPUs as the machine does, torch within CUDA_VISIBLE_DEVICES."""
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = int(visible[device]) if device < len(visible) and visible[device].isdigit() else device
    values = nvml.reading(index)
    if "error" in values:
        return {}
    return {"gpu_util_percent": values["utilization_percent"],
            "gpu_temp_c": values["temperature_c"], "gpu_power_w": values["power_w"]}


class MetricsWriter(TrainerCallback):
    """Appends one JSON object per logged step to metrics.jsonl and a readable line to the log."""

    def __init__(self, paths: JobPaths, heartbeat: Heartbeat, samples_per_step: int):
        self.paths = paths
        self.heartbeat = heartbeat
        self.samples_per_step = samples_per_step
        self._file = None
        self._last_time = 0.0
        self._last_step = 0
        self._last_tokens = 0
        self._first_step = 0  # where this process's training began

    def on_train_begin(self, args, state, control, **kwargs):
        self._first_step = state.global_step
        self.heartbeat.stop_background()
        self.heartbeat.beat(force=True, phase="training", step=state.global_step,
                            total_steps=state.max_steps)
        if state.is_world_process_zero:
            self._file = open(self.paths.metrics, "a", encoding="utf-8")
            if "mlflow" in (args.report_to or []):
                remember_mlflow_run(self.paths)  # transformers' MLflow callback began it
        self._last_time = time.time()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen
        device_telemetry(force=True)  # the first cpu_percent call only primes the counter

    def on_substep_end(self, args, state, control, **kwargs):
        self.heartbeat.beat(step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.heartbeat.beat(step=state.global_step)

    def on_prediction_step(self, args, state, control, **kwargs):
        self.heartbeat.beat(phase="evaluating")  # a long evaluation is progress, not a stall

    def on_evaluate(self, args, state, control, **kwargs):
        self.heartbeat.beat(force=True, phase="training")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if any(key.startswith("eval_") for key in logs) and state.is_world_process_zero:
            self._write_evaluation(state, logs)  # also the final one, after training ended
            return
        if self._file is None:
            return
        if "train_loss" in logs:  # the end-of-training summary, not a step
            if state.global_step == self._first_step:
                return  # resumed at the end, nothing trained: the attempt that trained has it
            write_json_atomic(self.paths.summary, {k: v for k, v in logs.items()
                                                   if isinstance(v, (int, float))})
            return
        now = time.time()
        elapsed = max(now - self._last_time, 1e-9)
        steps = state.global_step - self._last_step
        tokens = state.num_input_tokens_seen - self._last_tokens
        record: dict[str, Any] = {"step": state.global_step, "time": now,
                                  "epoch": round(state.epoch or 0.0, 6)}
        for key, value in logs.items():
            if key in NOT_METRICS:
                continue
            if isinstance(value, (int, float)):
                record[key] = value
        record["samples_per_s"] = steps * self.samples_per_step / elapsed
        if tokens:
            record["tokens_per_s"] = tokens / elapsed
            record["tokens_seen"] = state.num_input_tokens_seen
        record.update(device_telemetry())
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self._last_time, self._last_step, self._last_tokens = now, state.global_step, \
            state.num_input_tokens_seen
        loss = record.get("loss")
        print(f"step {state.global_step}/{state.max_steps}"
              + (f" loss {loss:.4f}" if isinstance(loss, float) else "")
              + f" lr {record.get('learning_rate', 0):.3g}", flush=True)

    def _write_evaluation(self, state, logs: dict[str, Any]) -> None:
        """An evaluation's record: the step it evaluated and its eval_* values. The time it took
        is not training time, so the next step's throughput is measured from its end."""
        record: dict[str, Any] = {"step": state.global_step, "time": time.time(),
                                  "epoch": round(state.epoch or 0.0, 6)}
        record.update({key: value for key, value in logs.items()
                       if key.startswith("eval_") and isinstance(value, (int, float))})
        with open(self.paths.metrics, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
        self._last_time = record["time"]
        loss = record.get("eval_loss")
        print(f"evaluation at step {state.global_step}"
              + (f": eval loss {loss:.4f}" if isinstance(loss, float) else ""), flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._file is not None:
            self._file.close()
            self._file = None


HOLD_LIMIT_S = 600.0


def hold(paths: JobPaths, step: int) -> None:
    """Fault injection: the hold-at-step wait (see faults)."""
    print(f"held at step {step} (injected by {FAULTS_ENV}) until {paths.hold_release.name} "
          "appears", flush=True)
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not paths.hold_release.exists() and requested(paths) is None \
            and time.monotonic() < deadline:
        time.sleep(0.1)


def die_if_injected(point: str) -> None:
    """Fault injection: SIGKILL this process at a named point of a run's end (see faults)."""
    if point in faults():
        print(f"{point}: killed (injected by {FAULTS_ENV})", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class ControlRequests(TrainerCallback):
    """Honours pause and cancel requests at the end of an optimizer step.

    Pause asks the Trainer to save a checkpoint (optimizer, scheduler, RNG and data position
    included) and stop; the trainer then exits with the pause code. A request that arrives in the
    middle of a gradient-accumulation cycle waits for the cycle's optimizer step.
    """

    def __init__(self, paths: JobPaths):
        self.paths = paths
        self.stopped_for: str | None = None
        self.notice: str | None = None  # the cluster's signal, when that (no request) stopped it
        self.pause_at_microstep = faults().get("pause-at-microstep")
        self.sigterm_at_step = faults().get("sigterm-at-step")
        self.hold_at_step = faults().get("hold-at-step")
        self._noted = False
        self._micro = 0  # micro-batches since this process started training

    def on_train_begin(self, args, state, control, **kwargs):
        self._micro = state.global_step * args.gradient_accumulation_steps

    def on_step_begin(self, args, state, control, **kwargs):
        if self.hold_at_step == state.global_step:
            hold(self.paths, state.global_step)

    def on_substep_end(self, args, state, control, **kwargs):
        self._count_micro_batch()
        action = requested(self.paths) if state.is_world_process_zero else None
        if action and not self._noted:
            self._noted = True
            within = self._micro - state.global_step * args.gradient_accumulation_steps
            print(f"{action} requested during step {state.global_step + 1}, after micro-batch "
                  f"{within} of {args.gradient_accumulation_steps}; honoured when the step ends",
                  flush=True)

    def _count_micro_batch(self) -> None:
        self._micro += 1
        if self.pause_at_microstep is not None and self._micro == self.pause_at_microstep:
            request(self.paths, PAUSE)

    def on_step_end(self, args, state, control, **kwargs):
        self._count_micro_batch()
        if self.sigterm_at_step == state.global_step:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before the next line
        asked = requested(self.paths) if state.is_world_process_zero else None
        if asked is None and PREEMPTION.signalled:
            # The cluster takes the node back: checkpoint now, resume when requeued. Remembered
            # as the cluster's, so that the console never takes it for a person's pause.
            asked, self.notice = PAUSE, PREEMPTION.signalled
        action = agreed_action(asked)
        if action == PAUSE:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_for = PAUSE
        elif action == CANCEL:
            control.should_save = False
            control.should_training_stop = True
            self.stopped_for = CANCEL
        return control


    def stop_record(self) -> dict[str, str]:
        """What exit.json says about the stop: a request honoured, or the cluster's notice."""
        if self.stopped_for is None:
            return {}
        if self.notice:
            return {"stopped_for": STOPPED_FOR_NOTICE, "notice": self.notice}
        return {"stopped_for": STOPPED_FOR_REQUEST}


class EarlyStopping(TrainerCallback):
    """Ends training, as completed, once the evaluation loss has not improved for `patience`
    evaluations in a row. Counted from the log history, which every checkpoint carries, so a
    paused and resumed job stops where an uninterrupted one would."""

    def __init__(self, patience: int):
        self.patience = patience
        self.reason: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        # Resumed from the checkpoint of an evaluation that stopped it: that step was its last.
        evaluated = [entry["step"] for entry in state.log_history if "eval_loss" in entry]
        if evaluated and evaluated[-1] == state.global_step:
            self.on_evaluate(args, state, control)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            return control  # the final model's evaluation: nothing left to stop
        history = [(entry["eval_loss"], entry["step"]) for entry in state.log_history
                   if "eval_loss" in entry and "step" in entry]
        if not history:
            return control
        best = min(range(len(history)), key=lambda i: history[i][0])  # the first of equal ones
        if len(history) - 1 - best >= self.patience:
            loss, step = history[best]
            self.reason = (f"eval loss has not improved for {self.patience} evaluations (best "
                           f"{loss:.4f} at step {step})")
            print(f"early stopping at step {state.global_step}: {self.reason}", flush=True)
            control.should_training_stop = True
        return control


class OutOfMemoryFaults(TrainerCallback):
    """Fault injection: a CUDA out-of-memory error, where a GPU is not needed to cause one."""

    raised = False  # per process: after the fallback the same step is trained again

    def __init__(self, at_step: int | None, always: bool):
        self.at_step, self.always = at_step, always

    def on_step_begin(self, args, state, control, **kwargs):
        step = state.global_step + 1
        if self.always or (step == self.at_step and not OutOfMemoryFaults.raised):
            OutOfMemoryFaults.raised = True
            raise torch.OutOfMemoryError(f"CUDA out of memory in step {step} (injected by "
                                         f"{FAULTS_ENV}) with a micro-batch of "
                                         f"{args.per_device_train_batch_size}")


def injected_faults() -> list[TrainerCallback]:
    found = faults()
    if "oom-at-step" in found or "oom-always" in found:
        return [OutOfMemoryFaults(found.get("oom-at-step"), "oom-always" in found)]
    return []


ACTIONS = (None, PAUSE, CANCEL)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank0_decides(value: int) -> int:
    """Rank 0's value, on every rank (the value itself where there is one process). Under DDP
    every rank must take the same branch wherever the branches differ in collective calls."""
    if not _distributed():
        return value
    import torch.distributed as dist

    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == "nccl" else torch.device("cpu"))
    code = torch.tensor([value], device=device)
    dist.broadcast(code, src=0)
    return int(code.item())


def agreed_action(action: str | None) -> str | None:
    """Rank 0's reading of the request files, for every rank: under DDP all ranks must stop at the
    same step (each reading the file itself could see it one step apart and deadlock)."""
    return ACTIONS[rank0_decides(ACTIONS.index(action))]


class TrainDeckTrainerMixin:
    """Mixed into the TRL trainer of every method (engine.methods).

    - A checkpoint folder carries INCOMPLETE_MARKER while it is written, so a trainer killed
      mid-save leaves a folder that resume skips.
    - The prepared (tokenized) dataset is cached by a key of its content and every setting that
      changes tokenization, so a re-run or a resume tokenizes nothing.
    """

    def __init__(self, *args, tokenized_cache: Path | None = None,
                 heartbeat: Heartbeat | None = None, truncate_to: int | None = None, **kwargs):
        self._tokenized_cache = tokenized_cache
        self._heartbeat = heartbeat
        self._truncate_to = truncate_to
        self._faults = faults()
        super().__init__(*args, **kwargs)

    def _run_epoch(self, *args, **kwargs):
        # transformers looks for the end only after a step: resumed from the checkpoint of the
        # last step (killed before its exit), it would train a step past max_steps, or past the
        # step where early stopping ended it (which stops it again in on_train_begin).
        if self.state.global_step >= self.state.max_steps or self.control.should_training_stop:
            print(f"step {self.state.global_step} of {self.state.max_steps} was the last: nothing "
                  f"left to train", flush=True)
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def _load_rng_state(self, checkpoint):
        if "resume-without-state" in self._faults:
            return
        super()._load_rng_state(checkpoint)

    def _prepare_dataset(self, dataset, *args, **kwargs):
        dataset_name = kwargs.get("dataset_name", args[-1] if args else "train")
        if self._tokenized_cache is None or not isinstance(dataset, Dataset):
            return super()._prepare_dataset(dataset, *args, **kwargs)
        folder = self._tokenized_cache / str(dataset_name)
        # TRL's preparation holds barriers between ranks: all ranks reuse the cache, or none.
        if rank0_decides(int((folder / "dataset_info.json").exists())):
            print(f"tokenized {dataset_name} dataset: reusing cache {folder}", flush=True)
            return load_from_disk(str(folder))
        if self._heartbeat:
            self._heartbeat.beat(force=True, phase="tokenizing")
        prepared = truncated(super()._prepare_dataset(dataset, *args, **kwargs), self._truncate_to)
        if int(os.environ.get("RANK", "0")) != 0:
            return prepared  # rank 0 writes the cache
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        prepared.save_to_disk(str(tmp))
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists() and not (folder / "dataset_info.json").exists():
            shutil.rmtree(folder, ignore_errors=True)  # not a cache entry: never completed
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another job with the same data wrote the same key meanwhile: identical content.
            shutil.rmtree(tmp, ignore_errors=True)
        return load_from_disk(str(folder))

    def _save_checkpoint(self, model, trial):
        output_dir = self._get_output_dir(trial=trial)
        folder = Path(output_dir) / checkpoint_name(self.state.global_step)
        best_step = self._best_step(Path(output_dir))
        if best_step is not None:
            # save_total_limit rotates old checkpoints away; HF Trainer spares the one named here.
            self.state.best_model_checkpoint = os.path.join(output_dir, checkpoint_name(best_step))
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / INCOMPLETE_MARKER).touch()
        if self._heartbeat:
            self._heartbeat.beat(force=True, phase="saving")
        super()._save_checkpoint(model, trial)
        if self._faults.get("kill-in-save") == self.state.global_step:
            os.kill(os.getpid(), signal.SIGKILL)  # files written, completeness not yet declared
        if self.args.should_save:
            fsync_tree(folder)
            (folder / INCOMPLETE_MARKER).unlink(missing_ok=True)
        if self._heartbeat:
            self._heartbeat.beat(force=True, phase="training")


    def _best_step(self, output_dir: Path) -> int | None:
        """The step, among complete checkpoints and the one being saved, with the lowest
        evaluation loss when the job evaluates, else the lowest logged training loss."""
        metric = ("eval_loss" if any("eval_loss" in entry for entry in self.state.log_history)
                  else "loss")
        loss_at = {entry["step"]: entry[metric] for entry in self.state.log_history
                   if metric in entry and "step" in entry}
        steps = {self.state.global_step}
        steps |= {checkpoint_step(entry.name) for entry in JobPaths(output_dir).checkpoints()}
        scored = [(loss_at[step], step) for step in steps if step in loss_at]
        return min(scored)[1] if scored else None


def truncated(dataset, max_length: int | None):
    """Padding-free SFT without packing: TRL asks for max_length None (it would not enforce it
    in the collator), so the examples are cut here, as TRL cuts them in padded mode (keep the
    start, drop an example that truncation left without a label)."""
    if max_length is None or not isinstance(dataset, Dataset):
        return dataset
    if "labels" not in dataset.column_names:
        return dataset
    dataset = dataset.map(lambda example: {"input_ids": example["input_ids"][:max_length],
                                           "labels": example["labels"][:max_length]})
    return dataset.filter(lambda example: any(label != -100 for label in example["labels"]))


def fsync_tree(folder: Path) -> None:
    """Flush a checkpoint's files to disk before it is declared complete."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
