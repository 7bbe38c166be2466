"""A job's model as one GGUF file for llama.cpp, Ollama and LM Studio:
`python -m engine.trainer.gguf_export <job folder> [--checkpoint checkpoint-N] [--quantization
q8_0]` merges a LoRA/QLoRA adapter into its base model first, then writes model.gguf and an
Ollama Modelfile into the job's gguf-<source>-<quantization>/ folder.

Written with `gguf`, the format's own Python package: its writer, and its maps from transformers'
tensor names to GGUF's. The tokenizer (vocabulary, merges, special tokens) and the chat template
go into the metadata. Llama-family attention weights are permuted into llama.cpp's rotary layout,
as llama.cpp's own converter does. Supported: Llama (and Mistral-style models with a byte-level
BPE tokenizer), Qwen2/2.5 and Qwen3; anything else is refused with that list.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from engine.atomic import fresh_folder, publish_folder
from engine.config import JobConfig
from engine.jobfiles import EXIT_COMPLETED, EXIT_INVALID, GGUF_QUANTIZATIONS, JobPaths
from engine.trainer.models import has_adapter, merged_model

# transformers' model_type -> (GGUF architecture name, whether q/k are permuted for llama.cpp's
# rotary layout, as its converter does for these)
ARCHITECTURES = {"llama": ("LLAMA", True), "mistral": ("LLAMA", True), "qwen2": ("QWEN2", False),
                 "qwen3": ("QWEN3", False)}


class Unsupported(ValueError):
    pass


def check_supported(config: dict[str, Any], tokenizer_json: dict[str, Any]) -> None:
    if config.get("model_type") not in ARCHITECTURES:
        raise Unsupported(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; this "
                          f"one is {config.get('model_type')!r}")
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE" or "Metaspace" in json.dumps(tokenizer_json.get("pre_tokenizer")):
        raise Unsupported("GGUF export supports byte-level BPE tokenizers (Llama 3, Qwen, GPT-2 "
                          "style); this model's tokenizer is sentencepiece-style")


def permute(weights, heads: int):
    """transformers' q/k rows (rotary halves) into llama.cpp's interleaved pairs."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def pre_tokenizer_name(tokenizer_json: dict[str, Any], model_type: str) -> str:
    """llama.cpp's name for how text is split before BPE (tokenizer.ggml.pre)."""
    text = json.dumps(tokenizer_json.get("pre_tokenizer"))
    if model_type in ("qwen2", "qwen3"):
        return "qwen2"
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in text:
        return "llama-bpe"
    return "gpt-2"


def write_gguf(model, tokenizer, destination: Path, quantization: str,
               name: str) -> None:
    import gguf

    config = model.config
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())
    check_supported(config.to_dict(), tokenizer_json)
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config.model_type][0])
    writer = gguf.GGUFWriter(str(destination), gguf.MODEL_ARCH_NAMES[arch])
    rows = model.get_input_embeddings().weight.shape[0]
    add_hyperparameters(writer, config, name, quantization, rows)
    add_tokenizer(writer, tokenizer, tokenizer_json, config, rows)
    add_tensors(writer, model, arch, quantization)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def add_hyperparameters(writer, config, name: str, quantization: str, vocab_rows: int) -> None:
    """The model's shape and rotary settings, as llama.cpp reads them from the metadata."""
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") \
        or getattr(config, "rope_theta", 10000.0)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(vocab_rows)
    writer.add_file_type(file_types[quantization])


def add_tensors(writer, model, arch, quantization: str) -> None:
    """Every weight under its GGUF name, q/k permuted where the architecture needs it."""
    import gguf
    import numpy as np

    config = model.config
    permuted = ARCHITECTURES[config.model_type][1]
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    state = {key: value.detach().float().cpu().numpy() for key, value in model.state_dict().items()}
    if "lm_head.weight" not in state or config.tie_word_embeddings:
        # Written out even when tied: a reader that does not tie (transformers) gets the head.
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    for key, data in state.items():
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise Unsupported(f"no GGUF name for tensor {key}")
        if permuted and key.endswith("q_proj.weight"):
            data = permute(data, config.num_attention_heads)
        elif permuted and key.endswith("k_proj.weight"):
            data = permute(data, config.num_key_value_heads)
        add_tensor(writer, gguf_name, data, quantization, np, gguf)


def add_tensor(writer, name: str, data, quantization: str, np, gguf) -> None:
    """Norms and biases (1-D) stay f32, as in llama.cpp's files; a matrix whose rows do not fill
    q8_0's blocks of 32 is kept in f16."""
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quantization]
    if data.ndim < 2:
        qtype = gguf.GGMLQuantizationType.F32
    elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_tensor(name, gguf.quants.quantize(data, qtype))
    else:
        # the quantized bytes, whose element shape the writer works out from the type
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def add_tokenizer(writer, tokenizer, tokenizer_json: dict[str, Any], config, size: int) -> None:
    """The token list, one per embedding row (`size`), with merges and special tokens."""
    import gguf

    vocab = tokenizer_json["model"]["vocab"]
    added = {token["id"]: token for token in tokenizer_json.get("added_tokens", [])}
    by_id = {index: token for token, index in vocab.items()}
    # llama.cpp requires one token per embedding row (added tokens usually also sit in the vocab,
    # so the two are not summed); rows past the tokenizer's ids are padded, as its converter does.
    largest_id = max([*by_id, *added])
    if largest_id >= size:
        raise Unsupported(f"the tokenizer has token id {largest_id} but the model's embedding "
                          f"has only {size} rows; resize the embedding to the tokenizer")
    tokens, types = [], []
    for index in range(size):
        if index in added:
            tokens.append(added[index]["content"])
            types.append(gguf.TokenType.CONTROL if added[index].get("special")
                         else gguf.TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
        else:  # the embedding has rows the tokenizer never produces
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [" ".join(m) if isinstance(m, list) else m
              for m in tokenizer_json["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json, config.model_type))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token, add in (("bos_token_id", writer.add_bos_token_id),
                       ("eos_token_id", writer.add_eos_token_id),
                       ("pad_token_id", writer.add_pad_token_id)):
        value = getattr(tokenizer, token, None)
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(False)  # byte-level BPE models put their own markers in templates
    template = getattr(tokenizer, "chat_template", None)
    if template:
        writer.add_chat_template(template)


# Ollama renders prompts with Go templates; from a GGUF's Jinja template it only recognises the
# ones it ships, so the Modelfile carries the Go form of the chat formats the supported families
# use, keyed by the marker that identifies each, with the token that ends a turn.
OLLAMA_TEMPLATES = {
    "<|im_start|>": ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                     "{{ end }}<|im_start|>assistant\n", "<|im_end|>"),
    "<|start_header_id|>": ("{{- range .Messages }}<|start_header_id|>{{ .Role }}"
                            "<|end_header_id|>\n\n{{ .Content }}<|eot_id|>\n"
                            "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
                            "<|eot_id|>"),
}


def modelfile(chat_template: str | None, eos: str | None, bos: str | None) -> str:
    """An Ollama Modelfile beside model.gguf: the chat template in Ollama's form and the tokens
    that stop a reply."""
    lines, stop = ["FROM ./model.gguf"], [eos] if eos else []
    marker = next((m for m in OLLAMA_TEMPLATES if m in (chat_template or "")), None)
    if marker:
        template, end_of_turn = OLLAMA_TEMPLATES[marker]
        # the GGUF asks for no automatic BOS, so a template that writes one keeps it here
        if bos and "bos_token" in chat_template:
            template = template.replace("{{- range", f"{bos}{{{{- range", 1)
        lines.append(f'TEMPLATE """{template}"""')
        stop.append(end_of_turn)
    else:
        lines.append("# No TEMPLATE: the chat template in model.gguf is not in a format this "
                     "export knows;\n# Ollama uses it only if it recognises it.")
    lines += [f'PARAMETER stop "{token}"' for token in dict.fromkeys(stop)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.trainer.gguf_export",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--checkpoint", help="a checkpoint-N folder of the job (default: model/)")
    parser.add_argument("--quantization", choices=GGUF_QUANTIZATIONS, default="q8_0")
    args = parser.parse_args(argv)
    paths = JobPaths(args.job_dir.resolve())
    source = paths.root / args.checkpoint if args.checkpoint else paths.final_model
    config = JobConfig.from_dict(yaml.safe_load(paths.job_file.read_text())["config"])

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fp32 whatever the job's precision: the quantizer rounds once, from exact weights.
    if has_adapter(source):
        model = merged_model(source, config.model, torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    destination = paths.gguf(args.checkpoint, args.quantization)
    tmp = fresh_folder(destination)
    tmp.mkdir(parents=True)
    try:
        write_gguf(model, tokenizer, tmp / "model.gguf", args.quantization,
                   f"{paths.root.name}{'-' + args.checkpoint if args.checkpoint else ''}")
    except Unsupported as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    (tmp / "Modelfile").write_text(modelfile(getattr(tokenizer, "chat_template", None),
                                             tokenizer.eos_token, tokenizer.bos_token))
    publish_folder(tmp, destination)
    print(f"wrote {destination / 'model.gguf'} ({args.quantization})", flush=True)
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
