"""The GPU numbers, readable wherever a GPU is present.

Builds randomly initialised Llama-architecture models of about 0.5B and 1.5B parameters (from a
config: no download) and a dataset whose lengths vary as real data's do (16 to 1,024 tokens,
long-tailed; bench/tokens.py's), then trains each as LoRA and as QLoRA two ways, side by side:

- stock: a hand-written TRL + PEFT script (bench/plain_trl.py): padded batches, SDPA;
- TrainDeck: `python -m engine.train` with `auto` (padding-free batches, FlashAttention-2 and
  Liger kernels where installed and supported), the command the console runs.

Both use the precision and gradient checkpointing TrainDeck resolved for the job. Prints a table
of useful (non-pad) tokens/s, model FLOPs utilisation (6 x parameters x useful tokens/s over the
GPU's peak dense bf16 FLOP/s, the usual convention; LoRA computes no weight gradients for frozen
weights, so its real work is nearer 4 x) and peak GPU memory.

    bash bench/gpu_check.sh [--steps 30] [--peak-tflops N]
    bash bench/gpu_check.sh --self-check    # tiny models on the CPU: checks the script itself
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import NO_DEVICE_EXIT, command_line, run_plain_trl, scratch  # noqa: E402
from bench.tokens import rates, write_dataset  # noqa: E402
from bench.trainer_run import run_trainer  # noqa: E402
from tests.harness import REPO  # noqa: E402

# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
                    "V100": 125.0, "T4": 65.0}
BATCH, MAX_LENGTH = 8, 1024
GPU_DEVICE_NODES = {"nvidia0", "kfd"}  # NVIDIA's driver; AMD's (ROCm PyTorch speaks CUDA)
SIZES = {  # name -> Llama shape
    "0.5B": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16),
    "1.5B": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                 num_attention_heads=16, num_key_value_heads=16),
}
SELF_CHECK_SIZES = {
    "tiny-a": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4),
    "tiny-b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4),
}


def build_model(folder: Path, shape: dict) -> int:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(REPO / "data/tiny-model")
    config = LlamaConfig(vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, value in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key.lower() in name.lower():
            return value * 1e12
    return None


def run_traindeck(folder: Path, model: Path, data: Path, adapter: str, steps: int,
                  cache: Path) -> tuple[float, float, dict]:
    """(useful tokens/s, peak GPU MiB, what auto chose)."""
    config = {"method": "sft", "adapter": adapter, "model": str(model), "dataset": str(data),
              "dataset_format": "text", "max_steps": steps, "per_device_train_batch_size": BATCH,
              "max_length": MAX_LENGTH, "save_steps": 100000, "logging_steps": 1,
              "learning_rate": 2e-4, "warmup_steps": 0.03, "num_train_epochs": 1}
    records = run_trainer(folder, config, cache)
    resolved = {**json.loads((folder / "resolved.json").read_text()),
                **{k: v for k, v in _job_config(folder).items()
                   if k in ("precision", "gradient_checkpointing")}}
    memory = max((r.get("gpu_mem_peak_mb") or 0.0) for r in records)
    return rates(records)[0], memory, resolved


def _job_config(folder: Path) -> dict:
    import yaml
    return yaml.safe_load((folder / "job.yaml").read_text())["config"]


def run_stock(folder: Path, model: Path, data: Path, adapter: str, steps: int,
              chosen: dict) -> tuple[float, float]:
    """The hand-written script with the job's precision and checkpointing: (tokens/s, peak MiB)."""
    options = ["--data", str(data), "--max-length", str(MAX_LENGTH), "--tokens",
               "--model", str(model), "--adapter", adapter, "--batch", str(BATCH)]
    if chosen.get("precision") == "bf16":
        options.append("--bf16")
    if chosen.get("gradient_checkpointing"):
        options.append("--gradient-checkpointing")
    lines = run_plain_trl(folder / "stock.jsonl", steps, *options)[1:]
    memory = next((line["gpu_mem_peak_mb"] for line in lines if "gpu_mem_peak_mb" in line), 0.0)
    return rates([line for line in lines if "step" in line])[0], memory


def no_gpu(why: str) -> None:
    print(f"gpu_check: no GPU: {why}; run with --self-check to check the script on the CPU",
          file=sys.stderr)
    sys.exit(NO_DEVICE_EXIT)


def main() -> None:
    parser = command_line(__doc__, steps=30)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s")
    parser.add_argument("--self-check", "--allow-cpu", action="store_true", dest="self_check",
                        help="tiny models on the CPU, a few steps: checks this script end to end")
    args = parser.parse_args()
    if not args.self_check and not GPU_DEVICE_NODES.intersection(os.listdir("/dev")):
        no_gpu("no GPU device node (/dev/nvidia0 or /dev/kfd)")  # without importing torch (2 s)
    import torch

    if not torch.cuda.is_available() and not args.self_check:
        no_gpu("no CUDA device visible to PyTorch (torch.cuda.is_available() is False)")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU self-check)"
    steps = min(args.steps, 6) if args.self_check else args.steps
    folder = scratch("gpu")
    data = folder / "data.jsonl"
    lengths = write_dataset(data, rows=max(400, BATCH * steps * 2))
    peak = peak_flops(gpu, args.peak_tflops)
    print(f"device: {gpu}; torch {torch.__version__}; batch {BATCH}, texts of {min(lengths)} to "
          f"{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); {steps} steps",
          flush=True)
    header = (f"{'model':<8}{'adapter':<8}{'run':<10}{'useful tok/s':>13}{'MFU':>8}"
              f"{'peak GiB':>10}  settings")
    print(header + "\n" + "-" * len(header), flush=True)
    for size, shape in (SELF_CHECK_SIZES if args.self_check else SIZES).items():
        model = folder / f"model-{size}"
        parameters = build_model(model, shape)
        for adapter in ("lora", "qlora"):
            run = folder / f"{size}-{adapter}"
            deck, deck_memory, chosen = run_traindeck(run / "traindeck", model, data, adapter,
                                                      steps, folder / "cache")
            stock, stock_memory = run_stock(run / "stock", model, data, adapter, steps, chosen)
            levers = ", ".join(f"{k}={chosen.get(k)}" for k in (
                "padding_free", "attn_implementation", "use_liger_kernel",
                "gradient_checkpointing", "precision"))
            for name, rate, memory, settings in (
                    ("stock", stock, stock_memory, "padded, sdpa"),
                    ("TrainDeck", deck, deck_memory, levers)):
                mfu = f"{6 * parameters * rate / peak * 100:.1f}%" if peak else "n/a"
                print(f"{size:<8}{adapter:<8}{name:<10}{rate:>13.0f}{mfu:>8}"
                      f"{memory / 1024:>10.2f}  {settings}", flush=True)
            print(f"{size:<8}{adapter:<8}{'ratio':<10}{deck / stock:>13.2f}  "
                  f"({parameters / 1e6:.0f}M parameters)", flush=True)


if __name__ == "__main__":
    main()
