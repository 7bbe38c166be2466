"""Merge a job's LoRA/QLoRA adapter into its base model:
`python -m engine.trainer.export <job folder> [--checkpoint checkpoint-N]` writes a standalone
model (safetensors, tokenizer, chat template) that loads with plain transformers: a causal
language model, or for a reward model a sequence classifier with one output (the score).

It runs as its own process, so the console never loads a model or holds GPU memory. A QLoRA
adapter is merged into the base model loaded in 16/32-bit, not into 4-bit weights, which would
round the merge away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from engine.atomic import fresh_folder, publish_folder
from engine.config import JobConfig
from engine.jobfiles import EXIT_COMPLETED, EXIT_INVALID, JobPaths
from engine.methods import METHODS
from engine.trainer.models import has_adapter, merged_model, torch_dtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.trainer.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--checkpoint", help="a checkpoint-N folder of the job (default: model/)")
    args = parser.parse_args(argv)
    paths = JobPaths(args.job_dir.resolve())
    source = paths.root / args.checkpoint if args.checkpoint else paths.final_model
    if not has_adapter(source):
        print(f"error: {source} holds no adapter (a full fine-tune is already a standalone "
              f"model: download it as is)", file=sys.stderr)
        return EXIT_INVALID
    config = JobConfig.from_dict(yaml.safe_load(paths.job_file.read_text())["config"])

    from transformers import AutoTokenizer

    merged = merged_model(source, config.model, torch_dtype(config.precision),
                          METHODS[config.method].head)
    destination = paths.merged(args.checkpoint)
    tmp = fresh_folder(destination)
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    publish_folder(tmp, destination)
    print(f"merged {source.name} into {config.model}: {destination}", flush=True)
    return EXIT_COMPLETED


if __name__ == "__main__":
    sys.exit(main())
