"""Run `python -m engine.train` on a plain config, as the console would; its metrics records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from engine.jobfiles import SUPERVISED_ENV
from engine.machine import detect
from engine.presets import PresetLibrary
from engine.resolve import resolve
from tests.harness import REPO


def run_trainer(folder: Path, config: dict[str, Any], cache_dir: Path,
                env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Train once in `folder` (a fresh job folder) and return its metrics records."""
    folder.mkdir(parents=True)
    job_file = folder / "job.yaml"
    resolution = resolve(config, PresetLibrary(), detect(), base_dir=REPO)
    # Written as the console writes a job file, with one tokenized-data cache shared by all runs.
    job_file.write_text(yaml.safe_dump({"job_id": folder.name,
                                        "config": resolution.config.to_dict(),
                                        "cache_dir": str(cache_dir)}))
    (folder / "resolved.json").write_text(json.dumps(resolution.resolved))  # what auto chose
    started = time.time()
    with open(folder / "training.log", "wb") as log:
        code = subprocess.run([sys.executable, "-m", "engine.train", str(job_file)], cwd=REPO,
                              env={**os.environ, SUPERVISED_ENV: "1", **(env or {})},
                              stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        log = (folder / "training.log")
        raise RuntimeError(f"trainer exited {code} in {folder} after {time.time() - started:.0f} s"
                           + (f": {log.read_text()[-2000:]}" if log.exists() else ""))
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
