"""A rough estimate of a job's training memory on one GPU, from the model's config.json, to decide
whether `gradient_checkpointing: auto` turns checkpointing on. Rough by design (within a factor
that the 15% margin absorbs for the common decoder-only models); it errs towards checkpointing,
which costs speed, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from engine.config import JobConfig
from engine.methods import METHODS

HEADROOM = 0.85  # of the GPU's memory; the rest for the CUDA context, allocator slack, kernels


def model_shape(model: str) -> dict[str, Any] | None:
    """config.json of a local model folder or a cached hub model (None: not readable here)."""
    local = Path(model) / "config.json"
    try:
        path = local if local.is_file() else try_to_load_from_cache(model, "config.json")
        return json.loads(Path(path).read_text()) if isinstance(path, (str, Path)) else None
    except (OSError, ValueError):  # not a readable file, or not a valid hub id
        return None


def training_bytes(config: JobConfig, shape: dict[str, Any], checkpointing: bool) -> float:
    """Weights, gradients and optimizer state of what trains (and a full fine-tune's reference
    model where the method has one), activations and logits of every sequence an example
    sends through the model."""
    hidden = shape.get("hidden_size", 0)
    layers = shape.get("num_hidden_layers", 0)
    inner = shape.get("intermediate_size", 4 * hidden)
    vocab = shape.get("vocab_size", 0)
    params = layers * (4 * hidden * hidden + 3 * hidden * inner) + vocab * hidden * (
        1 if shape.get("tie_word_embeddings") else 2)
    half = config.precision in ("bf16", "fp16")
    method = METHODS[config.method]
    width = 2 if half else 4
    if config.adapter == "full":
        state = params * 16  # fp32 weights, gradients and two AdamW moments
        if method.reference:
            state += params * width  # the frozen reference model
    else:
        weights = params * (0.55 if config.adapter == "qlora" else 2 if half else 4)
        adapter = layers * 7 * config.lora_r * 2 * hidden  # seven projections a layer
        state = weights + adapter * 16
    tokens = config.per_device_train_batch_size * config.max_length * method.sequences
    # Per layer, ~34 values of width `hidden` per token are kept for the backward pass (with a
    # fused attention); with checkpointing only each layer's input is.
    activations = layers * tokens * hidden * width * (1 if checkpointing else 17)
    # fp32 logits and their gradient; a score head has one output, not the vocabulary.
    logits = tokens * (1 if method.head == "score" else vocab) * 4 * 2
    return state + activations + logits


def needs_checkpointing(config: JobConfig, gpu_memory_mb: float | None) -> bool:
    """True when the job would not fit the GPU without checkpointing (False on a CPU, or when the
    model's size cannot be read here)."""
    if not gpu_memory_mb:
        return False
    shape = model_shape(config.model)
    if shape is None:
        return False
    return training_bytes(config, shape, checkpointing=False) > HEADROOM * gpu_memory_mb * 2**20
