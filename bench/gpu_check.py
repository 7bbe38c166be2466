"""The GPU numbers, readable wherever a GPU is present.

Builds a randomly initialised Llama-architecture model of about 0.5B parameters (no download), a
synthetic text dataset of ~1,000-token rows, and trains it through TrainDeck's own trainer
(`python -m engine.train`, the command the console runs) as SFT-QLoRA and as SFT-LoRA with the
machine's `auto` settings. Prints steady-state samples/s and tokens/s, peak GPU memory, and model
FLOPs utilisation: 6 x parameters x tokens/s over the GPU's peak dense bf16 FLOP/s (the usual MFU
convention; LoRA computes no weight gradients for frozen weights, so its real work is nearer 4 x).

    bash bench/gpu_check.sh [--steps 40] [--peak-tflops N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import REPO  # noqa: E402
from bench.trainer_run import run_trainer  # noqa: E402
from engine.console.analytics import mean_of, steady_state  # noqa: E402

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
                    "V100": 125.0, "T4": 65.0}
BATCH, LENGTH = 8, 1024


def build_model(folder: Path, small: bool) -> int:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    size = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
            if small else
            dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16))
    tokenizer = AutoTokenizer.from_pretrained(REPO / "data/tiny-model")
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **size)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def build_dataset(path: Path, rows: int = 512) -> None:
    """Rows of about LENGTH tokens, made of the shipped sample sentences."""
    sentences = [json.loads(line)["text"] for line in
                 (REPO / "data/samples/text.jsonl").read_text().splitlines()]
    with open(path, "w") as f:
        for n in range(rows):
            picked = [sentences[(n * 7 + k) % len(sentences)] for k in range(60)]
            f.write(json.dumps({"text": "\n\n".join(picked)}) + "\n")


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, value in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return value * 1e12
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run a 2-layer model on the CPU to check this script itself")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("gpu_check: no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU self-check)"
    folder = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    parameters = build_model(folder / "model", small=args.allow_cpu)
    build_dataset(folder / "data.jsonl")
    peak = peak_flops(gpu, args.peak_tflops)
    print(f"device: {gpu}; torch {torch.__version__}; model: random Llama, "
          f"{parameters / 1e6:.0f}M parameters; batch {BATCH} x {LENGTH} tokens", flush=True)
    for adapter in ("qlora", "lora"):
        config = {"method": "sft", "adapter": adapter, "model": str(folder / "model"),
                  "dataset": str(folder / "data.jsonl"), "dataset_format": "text",
                  "max_steps": args.steps, "per_device_train_batch_size": BATCH,
                  "max_length": LENGTH, "save_steps": 100000, "logging_steps": 1}
        records = run_trainer(folder / adapter, config, folder / "cache")
        steady = steady_state(records)
        tokens = mean_of(steady, "tokens_per_s") or 0.0
        memory = max((r.get("gpu_mem_peak_mb") or 0.0) for r in records)
        mfu = f"{6 * parameters * tokens / peak * 100:.1f}%" if peak else "unknown (give --peak-tflops)"
        print(f"SFT-{adapter.upper():<5} samples/s {mean_of(steady, 'samples_per_s') or 0:8.2f}  "
              f"tokens/s {tokens:10.0f}  peak GPU memory {memory / 1024:6.2f} GiB  MFU {mfu}",
              flush=True)


if __name__ == "__main__":
    main()
