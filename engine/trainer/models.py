"""A job's model as training, export, GGUF export and Try it load it: the torch dtype of the job's
precision, and a LoRA/QLoRA adapter merged into its base model. torch, transformers and peft are
imported inside the functions, so the tools' `--help` and argument errors stay instant."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def torch_dtype(precision: str) -> Any:
    """The dtype a job's `precision` computes in (fp32 for `fp32` and anything unknown)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def has_adapter(folder: Path) -> bool:
    """Whether a saved model folder holds a LoRA/QLoRA adapter rather than whole weights."""
    return (folder / "adapter_config.json").exists()


def merged_model(adapter: Path, base_model: str, dtype: Any, head: str = "causal") -> Any:
    """The base model with the adapter in folder `adapter` merged into its weights: a plain
    transformers model. The base is loaded in `dtype`, never in 4 bits (a QLoRA adapter merged
    into 4-bit weights would be rounded away). `head` (engine.methods): "score" loads it as a
    one-output sequence classifier, whose score head the adapter folder holds in full."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if head == "score":
        base = AutoModelForSequenceClassification.from_pretrained(base_model, dtype=dtype,
                                                                  num_labels=1)
        # The score is read at each sequence's last token, found by the padding after it.
        base.config.pad_token_id = AutoTokenizer.from_pretrained(adapter).pad_token_id
    else:
        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    return PeftModel.from_pretrained(base, adapter).merge_and_unload()
