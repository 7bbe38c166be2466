"""Useful tokens per second: TrainDeck's `auto` batching against a plain TRL script's padded
batches, on a dataset whose lengths vary as real data's do.

The script writes a dataset of --rows texts whose token counts run from 16 to 1,024 with a long
tail (log-normal, median about 90), then trains the tiny model on it for --steps steps, batch 8,
LoRA r16, fp32, seed 42, alternating (A) bench/plain_trl.py with TRL's defaults (every batch
padded to its longest example) and (B) `python -m engine.train` with TrainDeck's defaults, for
--pairs pairs. Both count only non-pad tokens (transformers' num_input_tokens_seen
"non_padding"). Reports steady-state useful tokens/s of each, the ratio B/A, what `auto` chose,
and the mean per-token training loss of each over the same steps (the same examples in the same
order: the losses must agree).

    python bench/tokens.py [--pairs 2] [--steps 60] [--rows 2000] [--warm-up-steps 3]
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import command_line, machine_line, run_plain_trl, scratch  # noqa: E402
from bench.trainer_run import run_trainer  # noqa: E402
from engine.console.metrics.analytics import steady_state  # noqa: E402
from engine.sources import SAMPLES_DIR, TINY_MODEL  # noqa: E402

BATCH, MAX_LENGTH = 8, 1024


def write_dataset(path: Path, rows: int, seed: int = 0) -> list[int]:
    """Texts of 16..1,024 tokens, log-normal (long-tailed); returns their token counts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    words = " ".join(json.loads(line).get("text", "") for line in
                     (SAMPLES_DIR / "text.jsonl").read_text().splitlines()).split()
    rng = random.Random(seed)
    lengths = []
    with open(path, "w") as f:
        for _ in range(rows):
            target = int(min(MAX_LENGTH, max(16, rng.lognormvariate(math.log(90), 0.9))))
            ids = tokenizer(" ".join(rng.choice(words) for _ in range(target)))["input_ids"]
            text = tokenizer.decode(ids[:target - 1], skip_special_tokens=True)
            lengths.append(len(tokenizer(text)["input_ids"]))
            f.write(json.dumps({"text": text}) + "\n")
    return lengths


def rates(records: list[dict]) -> tuple[float, float]:
    """(useful tokens/s over the steady part, mean per-token loss over all steps)."""
    steady = steady_state(records)
    tokens = steady[-1]["tokens_seen"] - steady[0]["tokens_seen"]
    return tokens / (steady[-1]["time"] - steady[0]["time"]), \
        statistics.fmean(r["loss"] for r in records if "loss" in r)


def run_plain(data: Path, steps: int, folder: Path) -> tuple[float, float]:
    lines = run_plain_trl(folder / f"plain-{time.time():.0f}.jsonl", steps, "--data", str(data),
                          "--max-length", str(MAX_LENGTH), "--tokens")
    return rates([line for line in lines if "step" in line])


def traindeck_config(data: Path, steps: int) -> dict:
    return {"dataset": str(data), "max_length": MAX_LENGTH, "max_steps": steps,
            "per_device_train_batch_size": BATCH, "save_steps": 100000, "warmup_steps": 0.03,
            "learning_rate": 2e-4, "num_train_epochs": 1}


def run_traindeck(data: Path, steps: int, folder: Path, cache: Path) -> tuple[float, float, dict]:
    run = folder / f"traindeck-{time.time():.0f}"
    records = run_trainer(run, traindeck_config(data, steps), cache)
    chosen = json.loads((run / "resolved.json").read_text()) if (run / "resolved.json").exists() \
        else {}
    return (*rates(records), chosen)


def main() -> None:
    args = command_line(__doc__, pairs=2, steps=60, rows=2000, warm_up_steps=3).parse_args()
    folder = scratch("tokens")
    data = folder / "skewed.jsonl"
    lengths = write_dataset(data, args.rows)
    print(f"dataset: {len(lengths)} texts, tokens min {min(lengths)}, median "
          f"{statistics.median(lengths):.0f}, mean {statistics.fmean(lengths):.0f}, "
          f"max {max(lengths)}", flush=True)
    cache = folder / "cache"
    if args.warm_up_steps:  # tokenizes once into the cache, as any re-run reuses
        run_trainer(folder / "warm-up", traindeck_config(data, args.warm_up_steps), cache)
    plain, deck = [], []
    for pair in range(args.pairs):
        a = run_plain(data, args.steps, folder)
        b = run_traindeck(data, args.steps, folder, cache)
        plain.append(a)
        deck.append(b)
        print(f"pair {pair + 1}: plain TRL {a[0]:.0f} useful tokens/s (loss {a[1]:.4f}), "
              f"TrainDeck {b[0]:.0f} useful tokens/s (loss {b[1]:.4f})", flush=True)
    a_rate, b_rate = statistics.median(r[0] for r in plain), statistics.median(r[0] for r in deck)
    a_loss, b_loss = statistics.fmean(r[1] for r in plain), statistics.fmean(r[1] for r in deck)
    print(machine_line())
    print(f"TrainDeck auto chose: {deck[-1][2] or 'see the job file'}")
    print(f"useful tokens/s: plain TRL (padded) {a_rate:.0f}, TrainDeck {b_rate:.0f}, "
          f"ratio {b_rate / a_rate:.2f} (target >= 1.5)")
    print(f"mean per-token loss: plain {a_loss:.5f}, TrainDeck {b_loss:.5f}, difference "
          f"{100 * abs(b_loss - a_loss) / a_loss:.3f}% (target <= 1%)")


if __name__ == "__main__":
    main()
