"""Dataset reading, format detection and validation: every error names file, line and field."""

import json

import pandas as pd
import pytest

from engine.data import DatasetError, load_local, validate_local
from engine.sources import SAMPLE_FILES, sample_dataset


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fmt", list(SAMPLE_FILES))
def test_shipped_samples_are_detected(fmt):
    method = {"preference": "dpo", "unpaired_preference": "kto"}.get(fmt, "sft")
    summary = validate_local(sample_dataset(fmt), method=method)
    assert summary.format == fmt
    assert summary.rows == 85 and len(summary.preview) == 5
    assert len(summary.fingerprint) == 64


def test_instruction_rows_become_chat_prompt_and_completion():
    _, rows = load_local(sample_dataset("instruction"))
    first = rows[0]
    assert first["prompt"][0]["role"] == "user"
    assert "Answer the question" in first["prompt"][0]["content"]
    answer = first["completion"][0]["content"]
    assert first["completion"] == [{"role": "assistant", "content": answer}]


def test_csv_parquet_and_json_files(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(4)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.csv", "d.parquet", "d.json"):
        summary = validate_local(tmp_path / name)
        assert (summary.format, summary.rows) == ("prompt_completion", 4), name


@pytest.mark.parametrize("content,method,message", [
    ('{"text": "a"}\n{"text": "b"}\n{"text": "c",}\n', "sft",
     "line 3 is not valid JSON (Expecting property name enclosed in double quotes at column 14)"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', "sft",
     "line 2: output: missing"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}\n', "sft",
     "line 1: messages[2].role: 'bot' is not one of system, user, assistant, tool"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "sft",
     "line 1: messages: no assistant turn to learn from"),
    ('{"text": 5}\n', "sft", "line 1: text: expected text, got int"),
    ('{"text": "   "}\n', "sft", "line 1: text: empty"),
    ('{"question": "a", "answer": "b"}\n', "sft",
     "cannot tell the format from its fields (answer, question)"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
     "dpo",
     "its format is messages, but method dpo needs preference (prompt, chosen, rejected)"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', "sft",
     "its format is preference, but method sft needs messages (messages) or instruction"),
    ('{"prompt": "p", "completion": "a"}\n', "kto",
     "its format is prompt_completion, but method kto needs unpaired_preference (prompt, "
     "completion, label) or preference (prompt, chosen, rejected)"),
    ('{"prompt": "p", "completion": "a", "label": true}\n{"prompt": "p", "completion": "b", '
     '"label": "maybe"}\n', "kto",
     "line 2: label: expected true (a desirable answer) or false, got 'maybe'"),
    ('{"prompt": "p", "completion": "a", "label": 1}\n', "kto",
     "line 1: label: expected true (a desirable answer) or false, got 1"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n', "sft",
     "its format is preference, but method sft needs"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n', "dpo",
     "line 2: rejected: missing"),
    ("[1, 2]\n", "sft", "line 1: expected an object with fields, got list"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, content, method, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        validate_local(path, method=method)
    assert f"dataset {path}" in str(err.value)
    assert message in str(err.value)


def test_kto_labels_come_as_flags_from_json_and_as_words_from_csv(tmp_path):
    path = tmp_path / "feedback.csv"
    path.write_text("prompt,completion,label\nq1,good,true\nq2,bad,False\nq3,fine,1\n")
    summary, rows = load_local(path, method="kto")
    assert summary.format == "unpaired_preference"
    assert [row["label"] for row in rows] == [True, False, True]
    # Pairs train KTO too (TRL splits each into a desirable and an undesirable answer).
    assert validate_local(sample_dataset("preference"), method="kto").format == "preference"
    with pytest.raises(DatasetError, match="method reward needs preference"):
        validate_local(sample_dataset("unpaired_preference"), method="reward")


def test_empty_files_and_wrong_types(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DatasetError, match="empty.jsonl: the file is empty"):
        validate_local(tmp_path / "empty.jsonl")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match="no rows"):
        validate_local(tmp_path / "blank.jsonl")
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unsupported file type \.txt; use one of \.jsonl"):
        validate_local(tmp_path / "data.txt")
    with pytest.raises(DatasetError, match="no such file"):
        validate_local(tmp_path / "absent.jsonl")


def test_a_named_format_is_checked_on_every_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "prompt": "p", "completion": "c"}])
    assert validate_local(path).format == "prompt_completion"
    assert validate_local(path, fmt="text").format == "text"
    with pytest.raises(DatasetError, match="line 1: instruction: missing"):
        validate_local(path, fmt="instruction")


def test_csv_line_numbers_count_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nq1,a1\nq2,\n")
    with pytest.raises(DatasetError, match="line 3: completion: empty"):
        validate_local(path)
