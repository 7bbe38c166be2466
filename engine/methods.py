"""The training methods: for each, what it trains on, which TRL trainer runs it, and what kind of
model it makes. One entry per method; the config's choices, the dataset checks, the trainer and
the export read them here. Light on purpose (no torch): the console imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # the form's help words: what it does and on what
    formats: tuple[str, ...]  # dataset formats it trains on; the first is its sample's
    trainer: str  # TRL's trainer class; its config class is the same name with Config
    head: str = "causal"  # "causal": a language model; "score": one reward per sequence
    # The batch order its trainer requires (None: random, or grouped by length if asked).
    sampling: str | None = None
    # Memory: sequences through the model per example (a pair's two answers; KTO's answer and
    # the mismatched one of its KL term), and whether a frozen reference model is loaded beside
    # it when every weight trains (with an adapter the reference is the base, adapter off).
    sequences: int = 1
    reference: bool = False
    min_batch: int = 1  # the smallest per-device batch its loss is defined for

    @property
    def config_class(self) -> str:
        return self.trainer.removesuffix("Trainer") + "Config"

    @property
    def trainer_module(self) -> str:
        """Where TRL defines the trainer (TRL imports it lazily, on first use)."""
        return f"trl.trainer.{self.trainer.removesuffix('Trainer').lower()}_trainer"

    @property
    def task_type(self) -> str:
        """PEFT's task type for the adapter."""
        return "SEQ_CLS" if self.head == "score" else "CAUSAL_LM"


METHODS: dict[str, Method] = {method.name: method for method in (
    Method("sft", "supervised fine-tuning on examples",
           ("messages", "instruction", "prompt_completion", "text"), "SFTTrainer"),
    Method("dpo", "preference alignment on chosen/rejected pairs", ("preference",),
           "DPOTrainer", sequences=2, reference=True),
    Method("kto", "preference alignment on single answers, each labelled desirable or not "
           "(chosen/rejected pairs are split into such answers)",
           ("unpaired_preference", "preference"), "KTOTrainer",
           # Its KL term pairs each answer with its neighbours' prompts in a fixed-order batch.
           sampling="sequential", sequences=2, reference=True, min_batch=2),
    Method("reward", "a reward model: a score head trained to rank chosen above rejected",
           ("preference",), "RewardTrainer", head="score", sequences=2),
)}
METHOD_NAMES = tuple(METHODS)
# Formats by method: what the config's rules and the dataset checks allow.
METHOD_FORMATS = {name: method.formats for name, method in METHODS.items()}


def makes_reward_model(method: str) -> bool:
    """Whether a job of `method` trains a score head (a stored record may name a method this
    version lacks: not a reward model, and no error)."""
    known = METHODS.get(method)
    return known is not None and known.head == "score"


def methods_help() -> str:
    return " ".join(f"{m.name}: {m.summary}." for m in METHODS.values())
