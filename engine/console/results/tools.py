"""The one way the console runs the trainer-side tools (merge an adapter, generate): in a process
of their own, so the console never loads a model or holds GPU memory, with a time limit and the
tool's last lines as the error when it fails."""

from __future__ import annotations

import subprocess
import sys

from engine import REPO_DIR
from engine.config import ConfigError

TOOL_TIMEOUT_S = 3600  # merging a large model on a slow disk takes minutes, not hours


def run_tool(module: str, args: list[str], what: str, stdin: str | None = None,
             timeout_s: float = TOOL_TIMEOUT_S) -> str:
    """`python -m <module> <args>`; its standard output, or a ConfigError naming `what` failed."""
    command = [sys.executable, "-m", module, *args]
    try:
        run = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True, input=stdin,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} took longer than {timeout_s / 60:g} minutes and was "
                          f"stopped") from None
    if run.returncode != 0:
        lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
        raise ConfigError(f"{what} failed: " + "\n".join(lines[-8:]))
    return run.stdout
