"""Experiment trackers: one short job reports to TensorBoard, MLflow, W&B (offline) and Trackio
at once, and each tracker's own reader finds the losses of metrics.jsonl, step for step, and the
job's id, owner and name on its run. No network: W&B runs offline without an API key."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import QUICK, REPO, open_engine, shutdown, wait_for_status
from tracker_readers import mlflow_losses, mlflow_run, tensorboard_losses, wandb_losses

from engine import capabilities
from engine.config import ConfigError
from engine.console.people.users import LOCAL_USER

pytestmark = pytest.mark.slow  # a real trainer

ALL = "tensorboard,mlflow,wandb,trackio"


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    engine = open_engine(tmp_path_factory.mktemp("trackers") / "workspace")
    job_id = engine.jobs.submit(LOCAL_USER, {**QUICK, "max_steps": 6, "report_to": ALL,
                                             "name": "tracked"})["job_id"]
    job = wait_for_status(engine, job_id, timeout=240)
    assert job["status"] == "completed", job["error"]
    losses = {m["step"]: m["loss"] for m in engine.views.get_metrics(LOCAL_USER, job_id, 0)}
    assert sorted(losses) == list(range(1, 7))
    yield engine, job_id, losses
    shutdown(engine)


def same(found, expected):
    """Float32 trackers (TensorBoard) keep 7 digits; the others every one."""
    assert sorted(found) == sorted(expected)
    assert all(found[step] == pytest.approx(expected[step], rel=1e-6) for step in expected)


def test_tensorboard_event_files_hold_the_losses_and_go_in_the_logs_zip(reported):
    engine, job_id, losses = reported
    folder = engine.workspace.job_paths(job_id).root / "tensorboard"
    same(tensorboard_losses(folder), losses)
    with zipfile.ZipFile(engine.artifacts.download_logs(LOCAL_USER, job_id)) as archive:
        assert any(name.startswith("tensorboard/") and "tfevents" in name
                   for name in archive.namelist())


def test_mlflow_keeps_the_losses_in_the_workspace_store_tagged_with_the_job(reported,
                                                                            monkeypatch):
    engine, job_id, losses = reported
    uri = (engine.workspace.root / "tracking" / "mlruns").as_uri()
    # The store the console chose, read back. For this test only: the trainers' environment is
    # this process's, and a spare trainer serves only the environment it imported under.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    same(mlflow_losses(uri, job_id), losses)
    _, run = mlflow_run(uri, job_id)
    assert run.data.tags["traindeck.owner"] == "local"
    assert run.data.tags["traindeck.name"] == "tracked"
    assert run.info.run_name == f"tracked ({job_id})"


def test_wandb_offline_run_files_hold_the_losses(reported):
    engine, job_id, losses = reported
    same(wandb_losses(engine.workspace.job_paths(job_id).root), losses)


def test_trackio_local_store_holds_the_losses(reported):
    engine, job_id, losses = reported
    # Trackio reads its folder at import: a fresh interpreter, pointed at the workspace's.
    code = ("import json, sys; from tracker_readers import trackio_losses; "
            "print(json.dumps(trackio_losses('traindeck', sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, f"tracked ({job_id})"], cwd=REPO / "tests",
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TRACKIO_DIR": str(engine.workspace.root / "tracking"
                                                               / "trackio")})
    assert out.returncode == 0, out.stderr[-2000:]
    found = {int(step): loss for step, loss in json.loads(out.stdout.splitlines()[-1]).items()}
    same(found, losses)


def test_an_unknown_or_missing_tracker_is_refused_at_submit(local_engine, monkeypatch):
    with pytest.raises(ConfigError, match="report_to: 'neptune' is not a tracker"):
        local_engine.jobs.check(LOCAL_USER, {"report_to": "tensorboard,neptune"})
    monkeypatch.setattr(capabilities, "installed", lambda name: name != "wandb")
    with pytest.raises(ConfigError, match=r"report_to wandb: the package is not installed.*"
                                          r"\.\[tracking\]"):
        local_engine.jobs.check(LOCAL_USER, {"report_to": "wandb"})
