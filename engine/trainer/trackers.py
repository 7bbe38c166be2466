"""The experiment trackers a job reports to (`report_to`), set up through the environment
variables transformers' own integrations read: where each one writes, the run's name and tags
(job id, name, owner, sweep), and one run per job across its attempts.

- tensorboard: event files in the job folder's tensorboard/ (in the logs zip).
- mlflow: MLFLOW_TRACKING_URI of the console's environment (a server, or sqlite:///...), else
  a folder store in the workspace's tracking/mlruns; experiment "traindeck".
- wandb: online where WANDB_API_KEY is set, else offline runs in the job folder's wandb/.
- trackio: the workspace's tracking/trackio (TRACKIO_DIR), project "traindeck".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from engine.jobfiles import JobPaths

PROJECT = "traindeck"


def run_name(job_id: str, name: str) -> str:
    return f"{name} ({job_id})" if name and name != job_id else job_id


def tags(job_id: str, name: str, owner: str, sweep: dict[str, Any] | None) -> dict[str, str]:
    found = {"traindeck.job_id": job_id, "traindeck.name": name, "traindeck.owner": owner}
    if sweep and sweep.get("id"):
        found["traindeck.sweep"] = str(sweep["id"])
    return found


def prepare(trackers: list[str], paths: JobPaths, tracking_dir: Path, job_tags: dict[str, str],
            environ: dict[str, str] | None = None) -> None:
    """Point each tracker at its store, in this (the trainer's) process environment."""
    env = os.environ if environ is None else environ
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = str(paths.root / "tensorboard")
    if "mlflow" in trackers:
        if not env.get("MLFLOW_TRACKING_URI"):
            # A folder needs no server and no database package (mlflow-skinny has none); MLflow
            # keeps that store working but asks for this opt-in.
            env["MLFLOW_TRACKING_URI"] = (tracking_dir / "mlruns").as_uri()
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        env.setdefault("MLFLOW_EXPERIMENT_NAME", PROJECT)
        env["MLFLOW_TAGS"] = json.dumps(job_tags)
        run_id = _read(paths.root / MLFLOW_RUN_FILE)
        if run_id:  # a resumed job goes on in the run it started
            env["MLFLOW_RUN_ID"] = run_id
    if "wandb" in trackers:
        if not env.get("WANDB_API_KEY"):
            env["WANDB_MODE"] = "offline"
        env["WANDB_DIR"] = str(paths.root)
        env.setdefault("WANDB_PROJECT", PROJECT)
        env["WANDB_RUN_ID"] = re.sub(r"[^A-Za-z0-9_-]", "-", job_tags["traindeck.job_id"])
        env["WANDB_RESUME"] = "allow"
        env["WANDB_TAGS"] = ",".join(f"{k.split('.')[1]}:{v}"[:64]
                                     for k, v in job_tags.items() if k != "traindeck.name")
    if "trackio" in trackers:
        env["TRACKIO_DIR"] = str(tracking_dir / "trackio")


MLFLOW_RUN_FILE = "mlflow_run_id"


def remember_mlflow_run(paths: JobPaths) -> None:
    """After the run started: its id, so that a resumed attempt logs into the same run."""
    try:
        import mlflow
    except ImportError:
        return
    run = mlflow.active_run()
    if run is not None and not (paths.root / MLFLOW_RUN_FILE).exists():
        (paths.root / MLFLOW_RUN_FILE).write_text(run.info.run_id)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
