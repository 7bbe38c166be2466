"""What a GGUF export refuses up front, without exporting anything (the export itself, with its
logits and tokenizer checks, is in test_artifacts.py)."""

import json

import pytest

from engine.console.artifacts import _model_type
from engine.jobfiles import GGUF_ARCHITECTURES
from engine.trainer.gguf_export import ARCHITECTURES, Unsupported, check_supported, permute


def test_the_console_and_the_exporter_agree_on_the_architectures():
    assert tuple(ARCHITECTURES) == GGUF_ARCHITECTURES


def test_an_unsupported_architecture_or_tokenizer_is_refused_with_the_list():
    byte_level = {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}
    check_supported({"model_type": "qwen2"}, byte_level)
    with pytest.raises(Unsupported, match="supports llama, mistral, qwen2, qwen3 models; this one "
                                          "is 'gpt_neox'"):
        check_supported({"model_type": "gpt_neox"}, byte_level)
    sentencepiece = {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Metaspace"}}
    with pytest.raises(Unsupported, match="sentencepiece-style"):
        check_supported({"model_type": "llama"}, sentencepiece)


def test_the_model_type_is_read_from_the_model_or_its_base(tmp_path):
    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    assert _model_type(adapter, str(base)) == "gpt_neox"
    assert _model_type(adapter, "Qwen/Qwen2.5-0.5B") is None  # a Hub id: the exporter checks it


def test_attention_rows_are_interleaved_as_llama_cpp_expects():
    import numpy as np

    rows = np.arange(8).reshape(8, 1)  # one head of 8 rows: halves [0..3] and [4..7]
    assert permute(rows, heads=1).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
