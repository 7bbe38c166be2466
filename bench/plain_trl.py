"""The reference for the benchmarks: the same training as the console's default job, written by
hand directly against TRL's SFTTrainer with TRL's defaults (padded batches), the way a user
would without TrainDeck. It records each optimizer step's wall time (one list append per step)
to OUT as JSON lines; with --tokens also the loss and the non-pad tokens seen so far.

    python bench/plain_trl.py OUT [--steps 300] [--data FILE] [--max-length 512] [--tokens]
"""

import argparse
import json
import time

START = time.time()  # process start, for start-to-first-step

from datasets import load_dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--tokens", action="store_true",
                        help="also record losses and non-pad tokens seen (one sync per step)")
    args = parser.parse_args()
    steps = StepTimes(args.tokens)
    trainer = SFTTrainer(
        model=MODEL,
        train_dataset=load_dataset("json", data_files=args.data, split="train"),
        args=SFTConfig(output_dir="/tmp/plain-trl-bench", max_steps=args.steps, seed=42,
                       per_device_train_batch_size=8, learning_rate=2e-4,
                       max_length=args.max_length, lr_scheduler_type="cosine", warmup_steps=0.03,
                       bf16=False, activation_checkpointing=False, save_strategy="no",
                       report_to="none", dataloader_num_workers=0, disable_tqdm=True,
                       use_cpu=True,
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


if __name__ == "__main__":
    main()
