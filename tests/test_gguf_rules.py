"""What a GGUF export refuses up front, without exporting anything (the export itself, with its
logits and tokenizer checks, is in test_artifacts.py)."""

import json
import re

import pytest

from engine.console.results.artifacts import _model_type
from engine.jobfiles import GGUF_ARCHITECTURES
from engine.sources import TINY_MODEL
from engine.trainer.gguf_export import (
    ARCHITECTURES,
    Unsupported,
    check_supported,
    modelfile,
    permute,
    write_gguf,
)


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


def test_the_token_list_has_one_entry_per_embedding_row(tmp_path):
    # llama.cpp refuses a file whose token list and embedding differ in length; the tiny
    # tokenizer's special tokens are also in its vocabulary and were once counted twice.
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    write_gguf(model, AutoTokenizer.from_pretrained(TINY_MODEL), tmp_path / "model.gguf", "f32",
               "tiny")
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    rows = model.get_input_embeddings().weight.shape[0]
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == rows
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert embedding.shape.tolist() == [model.config.hidden_size, rows]


def test_a_tokenizer_with_ids_past_the_embedding_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    model.resize_token_embeddings(700)
    with pytest.raises(Unsupported, match="token id 731 but the model's embedding has only 700"):
        write_gguf(model, AutoTokenizer.from_pretrained(TINY_MODEL), tmp_path / "model.gguf",
                   "f32", "tiny")


def render_ollama(template: str, messages: list[dict]) -> str:
    """Ollama's range-over-messages templates as Go's text/template renders them; `{{-` trims the
    whitespace before it."""
    template = re.sub(r"\s*\{\{-", "{{", template)
    head, rest = template.split("{{ range .Messages }}")
    body, tail = rest.split("{{ end }}")
    turns = (body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"])
             for m in messages)
    return head + "".join(turns) + tail


def template_of(modelfile_text: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', modelfile_text, re.S | re.M).group(1)


CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of Norway?"},
                {"role": "assistant", "content": "Oslo."},
                {"role": "user", "content": "And Peru?"}]
# Meta-Llama-3-8B-Instruct's chat template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def test_the_modelfile_carries_the_chat_template_in_ollamas_form():
    import jinja2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    chatml = modelfile(tokenizer.chat_template, tokenizer.eos_token, tokenizer.bos_token)
    assert render_ollama(template_of(chatml), CONVERSATION) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert 'PARAMETER stop "<|im_end|>"' in chatml
    llama3 = modelfile(LLAMA3_TEMPLATE, "<|eot_id|>", "<|begin_of_text|>")
    expected = jinja2.Template(LLAMA3_TEMPLATE).render(
        messages=CONVERSATION, bos_token="<|begin_of_text|>", add_generation_prompt=True)
    assert render_ollama(template_of(llama3), CONVERSATION) == expected
    assert llama3.count("PARAMETER stop") == 1  # the end of turn is the EOS: named once
    unknown = modelfile("[INST] {{ messages }}", "</s>", "<s>")
    assert "TEMPLATE" not in unknown.replace("No TEMPLATE", "") and 'stop "</s>"' in unknown
