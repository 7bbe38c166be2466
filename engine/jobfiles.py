"""The trainer protocol: the files a job folder holds, control requests, checkpoint markers and the
trainer's exit codes. The console and the trainer talk only through these files."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.atomic import write_atomic

# Exit codes of `python -m engine.train` (documented in the README).
EXIT_COMPLETED = 0
EXIT_FAILED = 1  # an error while training: the log's last lines say which
EXIT_INVALID = 2  # the job file, the model or the dataset is unusable; nothing was trained
EXIT_PAUSED = 75  # a pause request was honoured: a complete checkpoint was written
EXIT_CANCELLED = 76  # a cancel request was honoured

# exit.json's "stopped_for" beside EXIT_PAUSED or EXIT_CANCELLED: what the trainer honoured. A
# cluster's notice (Slurm's SIGTERM before a requeue or preemption, its USR1 ahead of the time
# limit) checkpoints as a pause does, but is never a person's pause; "notice" names its signal.
STOPPED_FOR_REQUEST = "request"  # a pause or cancel request file
STOPPED_FOR_NOTICE = "cluster notice"

SUPERVISED_ENV = "TRAINDECK_SUPERVISED"  # set by the console, whose supervisor captures output
INCOMPLETE_MARKER = ".incomplete"  # inside a checkpoint folder while it is being written
# HF Trainer's name for the folder of the checkpoint saved at a step; ASCII digits only, whole.
_CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint saved at `step`."""
    return f"checkpoint-{step}"


def checkpoint_step(name: object) -> int | None:
    """The step of a checkpoint folder's bare name; None for anything else (a path, `latest`,
    a folder of another kind, not a string)."""
    match = _CHECKPOINT_NAME.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / "job.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "training.log"

    @property
    def heartbeat(self) -> Path:
        return self.root / "heartbeat.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def record(self) -> Path:
        """The console's copy of the job's database record (for repair-db)."""
        return self.root / "record.json"

    @property
    def microbatch(self) -> Path:
        """Micro-batch changes the trainer made after running out of GPU memory."""
        return self.root / "microbatch.json"

    @property
    def exit_record(self) -> Path:
        return self.root / "exit.json"

    @property
    def hold_release(self) -> Path:
        """The go-ahead for a trainer held by the hold-at-step fault (engine/trainer/hooks.py)."""
        return self.root / "release-hold"

    @property
    def final_model(self) -> Path:
        return self.root / "model"

    @property
    def partial_model(self) -> Path:
        """Where the final model is written before it is put in place as model/ (whole)."""
        return self.root / "model.partial"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root  # HF Trainer's output_dir: checkpoint-N folders sit in the job folder

    def merged(self, checkpoint: str | None = None) -> Path:
        """Where the merged (adapter + base) model of the final model or a checkpoint goes."""
        return self.root / (f"merged-{checkpoint}" if checkpoint else "merged")

    def gguf(self, checkpoint: str | None, quantization: str) -> Path:
        """Where the GGUF export (model.gguf and a Modelfile) of the final model or a
        checkpoint goes, one folder per quantization."""
        return self.root / f"gguf-{checkpoint or 'final'}-{quantization}"

    def request_file(self, action: str) -> Path:
        return self.root / f"{action}.request"

    def checkpoints(self, complete_only: bool = True) -> list[Path]:
        """checkpoint-N folders, oldest step first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for entry in self.checkpoints_dir.iterdir():
            step = checkpoint_step(entry.name)
            if step is None or not entry.is_dir():
                continue
            if complete_only and (entry / INCOMPLETE_MARKER).exists():
                continue
            found.append((step, entry))
        return [path for _, path in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        complete = self.checkpoints()
        return complete[-1] if complete else None


# ---- control requests ------------------------------------------------------------------------

PAUSE, CANCEL = "pause", "cancel"


def request(paths: JobPaths, action: str) -> None:
    paths.request_file(action).write_text(str(time.time()))


def clear_requests(paths: JobPaths) -> None:
    for action in (PAUSE, CANCEL):
        paths.request_file(action).unlink(missing_ok=True)


def requested(paths: JobPaths) -> str | None:
    """Cancel wins over pause when both were asked."""
    for action in (CANCEL, PAUSE):
        if paths.request_file(action).exists():
            return action
    return None


# ---- small JSON files --------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# ---- the metrics file --------------------------------------------------------------------------


def truncate_after(path: Path, step: int) -> None:
    """Keep only records up to `step`: a resume from checkpoint-`step` redoes the rest."""
    if not path.exists():
        return
    kept = []
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            recorded_step = record.get("step") if isinstance(record, dict) else None
            if isinstance(recorded_step, int) and recorded_step <= step:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
    write_atomic(path, b"".join(kept))

# How a GGUF export stores weights: f32 (for checking), f16, bf16, q8_0 (8 bits, a scale per 32).
GGUF_QUANTIZATIONS = ("f32", "f16", "bf16", "q8_0")
# transformers' model types a GGUF export writes (llama.cpp's LLAMA, QWEN2 and QWEN3 layouts).
GGUF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
