"""Try a trained model:
`python -m engine.trainer.generate <job folder> --prompt TEXT [--checkpoint N]` prints one JSON
object with the base model's and the trained model's answers, side by side.

It runs as its own process so the console never holds a model or GPU memory. The prompt is framed
with the model's chat template, as the trainer framed chat and instruction data; decoding is
greedy, so the same prompt gives the same answer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from engine.config import JobConfig
from engine.jobfiles import EXIT_COMPLETED, EXIT_INVALID, JobPaths
from engine.trainer.models import has_adapter, torch_dtype


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.trainer.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--prompt", help="the prompt (default: read from stdin)")
    parser.add_argument("--checkpoint", help="a checkpoint-N folder (default: the final model)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    if args.prompt is None:
        args.prompt = sys.stdin.read()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = JobPaths(args.job_dir.resolve())
    source = paths.root / args.checkpoint if args.checkpoint else paths.final_model
    if not source.is_dir():
        print(f"error: {source.name} does not exist yet", file=sys.stderr)
        return EXIT_INVALID
    config = JobConfig.from_dict(yaml.safe_load(paths.job_file.read_text())["config"])
    result = answer_both(config, source, args.prompt, args.max_new_tokens)
    print(json.dumps(result), flush=True)
    return EXIT_COMPLETED


def frame_prompt(tokenizer, prompt: str, device: str) -> dict:
    """The prompt as the model's tokens, in its chat template when it has one."""
    if tokenizer.chat_template:
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                               add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    return {k: v.to(device) for k, v in inputs.items()}


def answer(model, tokenizer, inputs: dict, max_new_tokens: int) -> str:
    """The model's greedy continuation, without the prompt."""
    import torch

    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def answer_both(config: JobConfig, source: Path, prompt: str, max_new_tokens: int) -> dict:
    """The base model's answer, then the trained one's from `source` (adapter or full model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch_dtype(config.precision)
    tokenizer = AutoTokenizer.from_pretrained(source)
    inputs = frame_prompt(tokenizer, prompt, device)
    base = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(device).eval()
    result = {"prompt": prompt, "base": answer(base, tokenizer, inputs, max_new_tokens),
              "source": source.name}
    if has_adapter(source):
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(base, source).eval()
    else:
        del base  # a full model replaces the base: free its memory first
        tuned = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
    result["tuned"] = answer(tuned, tokenizer, inputs, max_new_tokens)
    return result


if __name__ == "__main__":
    sys.exit(main())
