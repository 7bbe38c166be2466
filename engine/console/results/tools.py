"""The one way the console runs the trainer-side tools (merge an adapter, write a GGUF file,
generate): in a process of their own, so the console never loads a model or holds GPU memory,
with a time limit and the tool's last lines as the error when it fails. A copy of the console's
spare trainer runs the tool when one is ready (its libraries are imported already: seconds
sooner); otherwise a fresh `python -m` does, with the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine import REPO_DIR
from engine.config import ConfigError
from engine.console.running.spares import Spares

TOOL_TIMEOUT_S = 3600  # merging a large model on a slow disk takes minutes, not hours
KILLED_WAIT_S = 30.0


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


class TimedOut(Exception):
    pass


class Tools:
    def __init__(self, spares: Spares | None = None):
        self.spares = spares

    def run(self, module: str, args: list[str], what: str, stdin: str | None = None,
            timeout_s: float = TOOL_TIMEOUT_S) -> str:
        """`python -m <module> <args>`; its standard output, or a ConfigError naming `what`
        failed."""
        command = [sys.executable, "-m", module, *args]
        try:
            finished = self._in_spare(command, stdin, timeout_s) or \
                self._fresh(command, stdin, timeout_s)
        except TimedOut:
            raise ConfigError(f"{what} took longer than {timeout_s / 60:g} minutes and was "
                              f"stopped") from None
        if finished.code != 0:
            lines = [line for line in (finished.stdout + finished.stderr).splitlines()
                     if line.strip()]
            raise ConfigError(f"{what} failed: " + "\n".join(lines[-8:]))
        return finished.stdout

    def _in_spare(self, command: list[str], stdin: str | None,
                  timeout_s: float) -> Finished | None:
        """Run in a copy of the spare trainer; None when none is ready."""
        spares = self.spares
        spare = spares.spare if spares is not None else None  # read once: a close clears it
        if spare is None or not spare.ready:
            return None  # no folder made for a tool that runs afresh
        spares.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tool-", dir=spares.folder) as scratch:
            files = Path(scratch)
            (files / "stdin").write_text(stdin or "")
            pid = spares.run_tool(command, files / "stdin", files / "stdout", files / "stderr")
            if pid is None:
                return None
            code = spares.wait_exit(pid, timeout_s)
            if code is None:
                _kill_group(pid)
                spares.wait_exit(pid, KILLED_WAIT_S)
                raise TimedOut
            return Finished(code, _read(files / "stdout"), _read(files / "stderr"))

    @staticmethod
    def _fresh(command: list[str], stdin: str | None, timeout_s: float) -> Finished:
        try:
            run = subprocess.run(command, cwd=REPO_DIR, capture_output=True, text=True,
                                 input=stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimedOut from None
        return Finished(run.returncode, run.stdout, run.stderr)


def _kill_group(pid: int) -> None:
    """The copy leads a process group of its own (anything it started goes with it)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
