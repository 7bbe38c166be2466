"""What the installed libraries can do, read without importing them (the console never imports
torch or transformers): whether an optional kernel package is installed, and whether a behaviour
a setting depends on is in the installed code. Each answer comes from the installed files, not
from a version number."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _module_text(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    try:
        return Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return ""


@cache
def packed_sequences_isolated() -> bool:
    """Whether transformers' SDPA/eager attention keeps the examples of a padding-free batch
    apart: it builds a block-diagonal mask from the restarting position_ids when there is no
    attention mask (transformers.masking_utils.find_packed_sequence_indices). Without that, a
    padding-free batch would let each example attend to the ones before it."""
    text = _module_text("transformers.masking_utils")
    return "def find_packed_sequence_indices" in text and "packed_sequence_mask" in text


@cache
def trl_padding_free(method: str) -> bool:
    """Whether TRL's trainer for `method` honours padding_free (TRL 1.16's DPOTrainer warns and
    falls back to padding: "temporarily unavailable after a refactor"). Which methods have the
    setting at all is the schema's (the field's `methods`)."""
    if method == "dpo":
        return "temporarily unavailable" not in _module_text("trl.trainer.dpo_trainer")
    return True
