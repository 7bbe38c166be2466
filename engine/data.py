"""Training data: read a local file, detect its format, validate every row, and convert rows into
the shapes TRL trains on. Every error names the file, the line (or row) and the field.

Formats, by their columns:
- messages: `messages`, a list of {role, content} turns (chat)
- instruction: `instruction`, optional `input`, `output` (Alpaca style)
- prompt_completion: `prompt`, `completion`
- text: `text` (plain language modelling)
- preference: `prompt`, `chosen`, `rejected` (pairs: DPO, KTO, reward models)
- unpaired_preference: `prompt`, `completion`, `label` (true: a desirable answer; KTO)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import AUTO, METHOD_FORMATS
from engine.schema import shorten

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant", "tool")
# Columns that identify each format, most specific first: preference rows also have `prompt`,
# unpaired preference rows `prompt` and `completion`.
SIGNATURES = (
    ("preference", ("prompt", "chosen", "rejected")),
    ("unpaired_preference", ("prompt", "completion", "label")),
    ("messages", ("messages",)),
    ("instruction", ("instruction", "output")),
    ("prompt_completion", ("prompt", "completion")),
    ("text", ("text",)),
)
PREVIEW_ROWS = 5
# A row is a training example, not a corpus: a longer line is a mistake (or an attack on the
# console's memory), refused before it is read whole.
MAX_LINE_BYTES = 16 << 20
MAX_JSON_FILE_BYTES = 256 << 20  # a .json file is parsed whole; larger ones belong in .jsonl
csv.field_size_limit(MAX_LINE_BYTES)


class DatasetError(ValueError):
    """A dataset problem a person can act on: the message names file, line and field."""


@dataclass
class DatasetSummary:
    path: str
    format: str
    rows: int
    fingerprint: str  # sha256 of the file's bytes: the tokenization cache key starts from it
    preview: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "rows": self.rows,
                "fingerprint": self.fingerprint, "preview": self.preview}


# ---------------------------------------------------------------------------------------------
# Reading: each reader yields (where, record) with `where` a phrase like "line 17" for messages.


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise DatasetError(f"dataset {path}: unsupported file type {suffix or '(none)'}; "
                           f"use one of {', '.join(EXTENSIONS)}")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DatasetError(f"dataset {path}: line {number} is longer than "
                                   f"{MAX_LINE_BYTES >> 20} MiB; one line is one example")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"dataset {path}: line {number} is not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"dataset {path}: line {number} is not valid JSON "
                                   f"({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise DatasetError(f"dataset {path}: line {number} nests too deeply") from None


def _read_json(path: Path) -> Iterator[tuple[str, Any]]:
    if path.stat().st_size > MAX_JSON_FILE_BYTES:
        raise DatasetError(f"dataset {path}: a .json file is read whole, and this one is over "
                           f"{MAX_JSON_FILE_BYTES >> 20} MiB; write it as .jsonl "
                           f"(one object per line)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"dataset {path}: line {exc.lineno} is not valid JSON "
                           f"({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"dataset {path}: not UTF-8 text") from None
    except RecursionError:
        raise DatasetError(f"dataset {path}: nests too deeply") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"train": [...]} or {"data": [...]}
    if not isinstance(data, list):
        raise DatasetError(f"dataset {path}: a .json dataset must be a list of objects "
                           f"(or use .jsonl, one object per line)")
    for index, record in enumerate(data, start=1):
        yield f"item {index}", record


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            if not reader.fieldnames:
                return
            for record in reader:
                if None in record:
                    raise DatasetError(f"dataset {path}: line {reader.line_num} has more values "
                                       f"than the header's {len(reader.fieldnames)} columns")
                yield f"line {reader.line_num}", record
        except csv.Error as exc:
            raise DatasetError(f"dataset {path}: line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise DatasetError(f"dataset {path}: after line {reader.line_num}: "
                               f"not UTF-8 text") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # heavy; only parquet files need it

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        index = 0
        for batch in batches:  # a batch at a time: memory stays bounded whatever the file's size
            for record in batch.to_pylist():
                index += 1
                yield f"row {index}", record
    except DatasetError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DatasetError(f"dataset {path}: not a readable parquet file ({exc})") from None


# ---------------------------------------------------------------------------------------------
# Formats: detection and per-row checks.


def detect_format(columns: set[str]) -> str | None:
    for name, required in SIGNATURES:
        if all(c in columns for c in required):
            return name
    return None


def describe_formats() -> str:
    return "; ".join(f"{name} ({', '.join(cols)})" for name, cols in SIGNATURES)


def check_row(fmt: str, record: Any) -> str | None:
    """The first problem with one row in format `fmt`, as "field: what is wrong", or None."""
    if not isinstance(record, dict):
        return f"expected an object with fields, got {type(record).__name__}"
    if fmt == "messages":
        return _check_messages("messages", record.get("messages"), need_assistant=True)
    if fmt == "instruction":
        return (_check_text(record, "instruction") or _check_text(record, "output")
                or _check_optional_text(record, "input") or _check_optional_text(record, "system"))
    if fmt == "prompt_completion":
        return _check_text_or_messages(record, ("prompt", "completion"))
    if fmt == "text":
        return _check_text(record, "text")
    if fmt == "preference":
        return _check_text_or_messages(record, ("prompt", "chosen", "rejected"))
    if fmt == "unpaired_preference":
        return _check_text_or_messages(record, ("prompt", "completion")) or _check_label(record)
    raise ValueError(f"unknown format {fmt}")


# A label as JSON writes it (true/false) or as a CSV cell holds it (text).
LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}


def _check_label(record: dict) -> str | None:
    value = record.get("label")
    if value is None:
        return "label: missing"
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, bool | str) and key in LABELS:
        return None
    return f"label: expected true (a desirable answer) or false, got {shorten(value)}"


def _check_text(record: dict, name: str) -> str | None:
    if name not in record or record[name] is None:
        return f"{name}: missing"
    if not isinstance(record[name], str):
        return f"{name}: expected text, got {type(record[name]).__name__}"
    if not record[name].strip():
        return f"{name}: empty"
    return None


def _check_optional_text(record: dict, name: str) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, str):
        return None
    return f"{name}: expected text, got {type(value).__name__}"


def _check_messages(name: str, turns: Any, need_assistant: bool) -> str | None:
    if turns is None:
        return f"{name}: missing"
    if not isinstance(turns, list) or not turns:
        return f"{name}: expected a non-empty list of {{role, content}} turns"
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            return f"{name}[{number}]: expected an object with role and content"
        if turn.get("role") not in ROLES:
            return f"{name}[{number}].role: {turn.get('role')!r} is not one of {', '.join(ROLES)}"
        if not isinstance(turn.get("content"), str):
            return f"{name}[{number}].content: expected text"
    if need_assistant and not any(t["role"] == "assistant" for t in turns):
        return f"{name}: no assistant turn to learn from"
    return None


def _check_text_or_messages(record: dict, names: tuple[str, ...]) -> str | None:
    """Either every field is text, or every field is a list of chat turns."""
    conversational = isinstance(record.get(names[0]), list)
    for name in names:
        if conversational:
            problem = _check_messages(name, record.get(name), need_assistant=False)
        else:
            problem = _check_text(record, name)
        if problem:
            return problem
    return None


# ---------------------------------------------------------------------------------------------
# Conversion into TRL's dataset shapes.


def to_trainer_row(fmt: str, record: dict) -> dict[str, Any]:
    """Instruction rows become conversational prompt/completion pairs, so the model's own chat
    template frames them and loss falls on the answer only; other formats are TRL-native."""
    if fmt == "messages":
        return {"messages": [{"role": t["role"], "content": t["content"]}
                             for t in record["messages"]]}
    if fmt == "instruction":
        question = record["instruction"].strip()
        if (record.get("input") or "").strip():
            question = f"{question}\n\n{record['input'].strip()}"
        prompt = [{"role": "user", "content": question}]
        if (record.get("system") or "").strip():
            prompt.insert(0, {"role": "system", "content": record["system"].strip()})
        answer = {"role": "assistant", "content": record["output"]}
        return {"prompt": prompt, "completion": [answer]}
    if fmt == "prompt_completion":
        return {"prompt": record["prompt"], "completion": record["completion"]}
    if fmt == "text":
        return {"text": record["text"]}
    if fmt == "preference":
        return {key: record[key] for key in ("prompt", "chosen", "rejected")}
    if fmt == "unpaired_preference":
        label = record["label"]
        return {"prompt": record["prompt"], "completion": record["completion"],
                "label": LABELS[label.strip().lower() if isinstance(label, str) else label]}
    raise ValueError(f"unknown format {fmt}")


def check_format_for_method(path: str, fmt: str, method: str) -> None:
    if fmt not in METHOD_FORMATS[method]:
        columns = dict(SIGNATURES)
        wanted = " or ".join(f"{name} ({', '.join(columns[name])})"
                             for name in METHOD_FORMATS[method])
        raise DatasetError(f"dataset {path}: its format is {fmt}, but method {method} needs "
                           f"{wanted}")


def load_rows(records: Iterator[tuple[str, Any]], source: str, fmt: str,
              method: str) -> tuple[str, list[dict[str, Any]]]:
    """Validate every record and convert it; returns (format, trainer rows)."""
    rows: list[dict[str, Any]] = []
    fmt = scan_rows(records, source, fmt, method, rows.append)
    return fmt, rows


def scan_rows(records: Iterator[tuple[str, Any]], source: str, fmt: str, method: str,
              keep: Callable[[dict[str, Any]], Any]) -> str:
    """Validate every record, hand each converted row to `keep`; returns the format."""
    count = 0
    for where, record in records:
        if not count and fmt == AUTO:
            if not isinstance(record, dict):
                raise DatasetError(f"dataset {source}: {where}: expected an object with fields, "
                                   f"got {type(record).__name__}")
            detected = detect_format(set(record))
            if detected is None:
                raise DatasetError(
                    f"dataset {source}: {where}: cannot tell the format from its fields "
                    f"({', '.join(sorted(record)) or 'none'}); "
                    f"expected one of: {describe_formats()}")
            fmt = detected
        if not count:
            check_format_for_method(source, fmt, method)
        problem = check_row(fmt, record)
        if problem:
            raise DatasetError(f"dataset {source}: {where}: {problem}")
        keep(to_trainer_row(fmt, record))
        count += 1
    if not count:
        raise DatasetError(f"dataset {source}: no rows (the file is empty)")
    return fmt


def fingerprint_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_file(path: str | os.PathLike) -> Path:
    file = Path(path)
    if not file.exists():
        raise DatasetError(f"dataset {path}: no such file")
    if file.is_dir():
        raise DatasetError(f"dataset {path}: is a folder; name a "
                           f"{'/'.join(e.lstrip('.') for e in EXTENSIONS)} file")
    if file.suffix.lower() not in EXTENSIONS:
        raise DatasetError(f"dataset {path}: unsupported file type {file.suffix or '(none)'}; "
                           f"use one of {', '.join(EXTENSIONS)}")
    if file.stat().st_size == 0:
        raise DatasetError(f"dataset {path}: the file is empty")
    return file


def load_local(path: str | os.PathLike, fmt: str = AUTO,
               method: str = "sft") -> tuple[DatasetSummary, list[dict[str, Any]]]:
    """Read, validate and convert a local dataset file (the trainer keeps every row)."""
    file = _check_file(path)
    detected, rows = load_rows(read_records(file), str(path), fmt, method)
    summary = DatasetSummary(str(path), detected, len(rows), fingerprint_file(file),
                             rows[:PREVIEW_ROWS])
    return summary, rows


def validate_local(path: str | os.PathLike, fmt: str = AUTO, method: str = "sft") -> DatasetSummary:
    """Validate every row without keeping them: the console checks files of any size in the
    memory of one row (and a preview)."""
    file = _check_file(path)
    preview: list[dict[str, Any]] = []
    count = 0

    def keep(row: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if len(preview) < PREVIEW_ROWS:
            preview.append(row)

    detected = scan_rows(read_records(file), str(path), fmt, method, keep)
    return DatasetSummary(str(path), detected, count, fingerprint_file(file), preview)


def held_out_count(rows: int, eval_split: float) -> int:
    """Rows that `eval_split` keeps out of training: a fraction of `rows` when below 1 (at least
    one row), else that many rows; at least one row must be left to train on."""
    count = max(1, round(rows * eval_split)) if eval_split < 1 else int(eval_split)
    if count >= rows:
        raise DatasetError(f"eval_split {eval_split:g} holds out {count} of the dataset's {rows} "
                           f"rows and leaves none to train on; hold out fewer")
    return count


def split_rows(rows: list, eval_split: float, seed: int) -> tuple[list, list]:
    """(training rows, held-out rows): the held-out ones drawn by `seed`, both in file order, so
    that the same data and seed always hold out the same examples."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:held_out_count(len(rows), eval_split)])
    return ([row for i, row in enumerate(rows) if i not in held],
            [row for i, row in enumerate(rows) if i in held])
