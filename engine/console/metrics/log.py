"""A job's metrics.jsonl, read incrementally: each refresh reads only the bytes appended since the
last one, so following a long run costs the same per tick at step 100 as at step 100,000."""

from __future__ import annotations

import bisect
import json
import os
import threading
from pathlib import Path
from typing import Any

RATE_KEYS = ("samples_per_s", "tokens_per_s")


class RunningStats:
    """What the analytics need of a run's records, kept up to date one record at a time (prefix
    sums, running extremes), so analysing a 100,000-step run costs what a 10-step one does."""

    def __init__(self, records: list[dict[str, Any]] = ()):
        self.rate_sums = {key: [0.0] for key in RATE_KEYS}  # [k]: sum over records[:k]
        self.rate_counts = {key: [0] for key in RATE_KEYS}
        self.loss_sums = [0.0]  # [k]: sum of the first k losses
        self.losses = 0
        self.first_loss = self.last_loss = self.best_loss = None
        self.best_step = None
        self.peaks = {"gpu_mem_peak_mb": 0.0, "rss_mb": 0.0}
        self.evaluations = 0
        self.last_eval_loss = self.best_eval_loss = self.best_eval_step = None
        for record in records:
            self.add(record)

    def add_evaluation(self, record: dict[str, Any]) -> None:
        loss = record.get("eval_loss")
        if not isinstance(loss, (int, float)):
            return
        self.evaluations += 1
        self.last_eval_loss = loss
        if self.best_eval_loss is None or loss < self.best_eval_loss:
            self.best_eval_loss, self.best_eval_step = loss, record["step"]

    def add(self, record: dict[str, Any]) -> None:
        for key in RATE_KEYS:
            value = record.get(key)
            number = isinstance(value, (int, float))
            self.rate_sums[key].append(self.rate_sums[key][-1] + (value if number else 0.0))
            self.rate_counts[key].append(self.rate_counts[key][-1] + number)
        loss = record.get("loss")
        if isinstance(loss, (int, float)):
            self.losses += 1
            self.loss_sums.append(self.loss_sums[-1] + loss)
            if self.first_loss is None:
                self.first_loss = loss
            self.last_loss = loss
            if self.best_loss is None or loss < self.best_loss:
                self.best_loss, self.best_step = loss, record["step"]
        for key in self.peaks:
            value = record.get(key)
            if isinstance(value, (int, float)) and value > self.peaks[key]:
                self.peaks[key] = value
        self.add_evaluation(record)

    def mean(self, key: str, start: int, end: int) -> float | None:
        """Mean of `key` over records[start:end], where present."""
        count = self.rate_counts[key][end] - self.rate_counts[key][start]
        return (self.rate_sums[key][end] - self.rate_sums[key][start]) / count if count else None

    def loss_trend(self) -> str | None:
        """'falling', 'flat' or 'rising': the last quarter's mean loss against the first's."""
        if self.losses < 4:
            return None
        quarter = max(1, self.losses // 4)
        first = self.loss_sums[quarter] / quarter
        last = (self.loss_sums[self.losses] - self.loss_sums[self.losses - quarter]) / quarter
        change = (last - first) / abs(first) if first else 0.0
        return "falling" if change < -0.01 else "rising" if change > 0.01 else "flat"



def is_evaluation(record: dict[str, Any]) -> bool:
    """An evaluation's record (eval_* values, no training loss of its own)."""
    return "loss" not in record and any(key.startswith("eval_") for key in record)


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._steps: list[int] = []
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self.stats = RunningStats()
        self.lock = threading.Lock()  # the scheduler thread appends while API threads read

    @property
    def size(self) -> int:
        """Bytes read so far: grows with every record."""
        return self._offset

    def refresh(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; returns the new records."""
        with self.lock:
            return self._refresh()

    def _refresh(self) -> list[dict[str, Any]]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._reset(stat.st_ino)  # rewritten (a resume from an earlier checkpoint truncates it)
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(stat.st_size - self._offset)
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # a line still being written has no newline yet
        new = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from a killed trainer: skip it, keep following
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                self._append(record)
                new.append(record)
        return new

    def _reset(self, inode: int | None) -> None:
        self.records, self._steps = [], []
        self._offset, self._partial, self._inode = 0, b"", inode
        self.stats = RunningStats()

    def _append(self, record: dict[str, Any]) -> None:
        step = record["step"]
        if is_evaluation(record) and self._steps and step == self._steps[-1]:
            # An evaluation follows the training record of the step it evaluated: one record.
            merged = {**record, **self.records[-1],
                      **{k: v for k, v in record.items() if k.startswith("eval_")}}
            self.records[-1] = merged
            self.stats.add_evaluation(merged)
            return
        if self._steps and step <= self._steps[-1]:
            # A resumed attempt repeats steps past its checkpoint: the newer values win.
            cut = bisect.bisect_left(self._steps, step)
            del self.records[cut:], self._steps[cut:]
            self.stats = RunningStats(self.records)
        self.records.append(record)
        self._steps.append(step)
        self.stats.add(record)

    def since(self, step: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.records[bisect.bisect_right(self._steps, step):]

    def at(self, step: int) -> dict[str, Any] | None:
        """The record of one step, found by bisection (steps are kept sorted)."""
        with self.lock:
            index = bisect.bisect_left(self._steps, step)
            if index < len(self._steps) and self._steps[index] == step:
                return self.records[index]
            return None

    @property
    def last(self) -> dict[str, Any] | None:
        return self.records[-1] if self.records else None
