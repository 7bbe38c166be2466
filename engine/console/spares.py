"""Warm start: one spare trainer (`python -m engine.trainer.spare`) kept ready with the heavy
libraries imported, so a starting job skips seconds of imports. A job is handed to the spare
(its command, environment, folder and log); the spare becomes that job's trainer, in its own
process and process group, running the same code as `python -m engine.train`; a new spare is
started behind it. Whatever the spare cannot serve exactly (torchrun jobs, an environment that
differs in anything read at import time, a spare that died) starts a fresh process instead."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import REPO_DIR

log = logging.getLogger("traindeck.spares")
# Read by the trainer when it runs, not when it imports: a job may set them differently.
PER_JOB_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "TRAINDECK_FAULTS"})


@dataclass
class Spare:
    popen: subprocess.Popen
    env: dict[str, str]
    status_file: Path

    def status(self) -> dict[str, Any] | None:
        """What the spare said once its imports were done (None: still importing)."""
        try:
            first = self.status_file.read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None
        try:
            return json.loads(first)
        except json.JSONDecodeError:
            return None


class Spares:
    def __init__(self, folder: Path, enabled: bool = True):
        self.folder = folder
        self.enabled = enabled
        self.spare: Spare | None = None
        self.handed_off = 0
        self._count = 0

    def start(self, env: dict[str, str]) -> None:
        """Have a spare ready for `env` (the trainers' environment without a job's own keys)."""
        if not self.enabled or (self.spare is not None and self.spare.popen.poll() is None):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        status_file = self.folder / f"spare-{self._count}.out"
        with open(status_file, "wb") as out:
            popen = subprocess.Popen([sys.executable, "-m", "engine.trainer.spare"], cwd=REPO_DIR,
                                     env=env, stdin=subprocess.PIPE, stdout=out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)  # the job's own process group
        self.spare = Spare(popen, dict(env), status_file)

    def take(self, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen | None:
        """Hand a job to the spare; its process, or None when a fresh one must be started (a
        new spare is started either way)."""
        spare, self.spare = self.spare, None
        base = {k: v for k, v in env.items() if k not in PER_JOB_ENV}
        usable = (spare is not None and spare.popen.poll() is None
                  and {k: v for k, v in spare.env.items() if k not in PER_JOB_ENV} == base
                  and (spare.status() or {}).get("status", "ready") == "ready")
        if not usable:
            if spare is not None:
                self._discard(spare)
            self.start(base)
            return None
        order = {"argv": argv, "env": env, "cwd": str(REPO_DIR), "log": str(log_path)}
        try:
            spare.popen.stdin.write((json.dumps(order) + "\n").encode())
            spare.popen.stdin.close()
        except OSError:  # it died between the check and the hand-off
            self._discard(spare)
            self.start(base)
            return None
        self.handed_off += 1
        spare.status_file.unlink(missing_ok=True)  # its output goes to the job's log now
        self.start(base)
        return spare.popen

    def _discard(self, spare: Spare) -> None:
        if spare.popen.poll() is None:
            spare.popen.kill()
            spare.popen.wait()
        spare.status_file.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.spare is not None:
            self._discard(self.spare)
            self.spare = None
