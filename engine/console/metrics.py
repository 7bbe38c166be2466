"""A job's metrics.jsonl, read incrementally: each refresh reads only the bytes appended since the
last one, so following a long run costs the same per tick at step 100 as at step 100,000."""

from __future__ import annotations

import bisect
import json
import os
import threading
from pathlib import Path
from typing import Any

from engine.console.analytics import RunningStats


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
