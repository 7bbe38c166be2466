#!/usr/bin/env bash
# SFT-QLoRA and SFT-LoRA of a random ~0.5B model on this machine's GPU; see bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" bench/gpu_check.py "$@"
