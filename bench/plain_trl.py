"""The reference for bench/overhead.py: the same training as the console's default job, written by
hand directly against TRL's SFTTrainer, the way a user would without TrainDeck. It records only
the wall time of each optimizer step (one list append per step) to OUT as JSON lines.

    python bench/plain_trl.py OUT --steps 300
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
    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append((state.global_step, time.time()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    steps = StepTimes()
    trainer = SFTTrainer(
        model=MODEL,
        train_dataset=load_dataset("json", data_files=DATA, split="train"),
        args=SFTConfig(output_dir="/tmp/plain-trl-bench", max_steps=args.steps, seed=42,
                       per_device_train_batch_size=8, learning_rate=2e-4, max_length=512,
                       lr_scheduler_type="cosine", warmup_steps=0.03, bf16=False,
                       activation_checkpointing=False, save_strategy="no", report_to="none",
                       dataloader_num_workers=0, disable_tqdm=True, use_cpu=True),
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                               target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[steps],
    )
    trainer.train()
    with open(args.out, "w") as f:
        f.write(json.dumps({"start": START}) + "\n")
        for step, at in steps.times:
            f.write(json.dumps({"step": step, "time": at}) + "\n")


if __name__ == "__main__":
    main()
