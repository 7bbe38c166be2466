#!/usr/bin/env bash
# Stock TRL+PEFT against TrainDeck auto, LoRA and QLoRA, ~0.5B and ~1.5B random models, on this
# machine's GPU (or --self-check on the CPU); see bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" bench/gpu_check.py "$@"
