"""The reference for the benchmarks: the same training as the console's default job, written by
hand directly against TRL's SFTTrainer and PEFT with TRL's defaults (padded batches, SDPA), the
way a user would without TrainDeck. It records each optimizer step's wall time (one list append
per step) to OUT as JSON lines; with --tokens also the loss and the non-pad tokens seen so far;
the last line has the peak GPU memory when a GPU was used.

TRL defaults bf16 and gradient checkpointing on: both are set explicitly here (--bf16,
--gradient-checkpointing) from the compared job's resolved config, so both do the same work.

    python bench/plain_trl.py OUT [--steps 300] [--data FILE] [--max-length 512] [--tokens]
                              [--model DIR] [--adapter lora|qlora] [--batch 8] [--bf16]
                              [--gradient-checkpointing]
"""

import argparse
import json
import time

START = time.time()  # process start, for start-to-first-step

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import BitsAndBytesConfig, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

MODEL = "data/tiny-model"
DATA = "data/samples/chat.jsonl"


class StepTimes(TrainerCallback):
    def __init__(self, tokens: bool):
        self.tokens = tokens
        self.records = []

    def on_step_end(self, args, state, control, **kwargs):
        record = {"step": state.global_step, "time": time.time()}
        if self.tokens:
            record["tokens_seen"] = state.num_input_tokens_seen
        self.records.append(record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.tokens and logs and "loss" in logs and self.records:
            self.records[-1]["loss"] = logs["loss"]


def model_kwargs(adapter: str, bf16: bool) -> dict:
    """What a hand-written QLoRA script passes: 4-bit NF4 with double quantisation."""
    kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": "sdpa"}
    if adapter == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"])
    return kwargs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--tokens", action="store_true",
                        help="also record losses and non-pad tokens seen (one sync per step)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--adapter", choices=("lora", "qlora"), default="lora")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    steps = StepTimes(args.tokens)
    on_gpu = torch.cuda.is_available()
    trainer = SFTTrainer(
        model=args.model,
        train_dataset=load_dataset("json", data_files=args.data, split="train"),
        args=SFTConfig(output_dir="/tmp/plain-trl-bench", max_steps=args.steps, seed=42,
                       per_device_train_batch_size=args.batch, learning_rate=2e-4,
                       max_length=args.max_length, lr_scheduler_type="cosine", warmup_steps=0.03,
                       bf16=args.bf16, activation_checkpointing=args.gradient_checkpointing,
                       save_strategy="no", report_to="none", dataloader_num_workers=0,
                       disable_tqdm=True, use_cpu=not on_gpu,
                       model_init_kwargs=model_kwargs(args.adapter, args.bf16),
                       **({"logging_steps": 1, "include_num_input_tokens_seen": "non_padding"}
                          if args.tokens else {})),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                               target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[steps],
    )
    trainer.train()
    with open(args.out, "w") as f:
        f.write(json.dumps({"start": START}) + "\n")
        for record in steps.records:
            f.write(json.dumps(record) + "\n")
        if on_gpu:
            f.write(json.dumps({"gpu_mem_peak_mb": torch.cuda.max_memory_allocated() / 2**20})
                    + "\n")


if __name__ == "__main__":
    main()
