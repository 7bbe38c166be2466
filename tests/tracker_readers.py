"""Each experiment tracker's store read back with that tracker's own code: losses by step."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def tensorboard_losses(folder: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def mlflow_run(tracking_uri: str, job_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("traindeck")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`traindeck.job_id` = '{job_id}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs tagged with job {job_id}"
    return client, runs[0]


def mlflow_losses(tracking_uri: str, job_id: str) -> dict[int, float]:
    client, run = mlflow_run(tracking_uri, job_id)
    return {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id,
                                                                              "loss")}


def wandb_records(run_file: Path):
    """The records of an offline run's transaction log (run-<id>.wandb), decoded with W&B's own
    protobuf messages; the framing is LevelDB's log format, as W&B writes it (the Python reader
    W&B once shipped is gone since its core moved to Go)."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32 * 1024, 7
    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B transaction log"
    position, pending = header, b""
    while position + header <= len(data):
        left = block - position % block
        if left < header:  # a block's tail too short for a record header is padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + header])
        pending += data[position + header:position + header + length]
        position += header + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_losses(job_folder: Path) -> dict[int, float]:
    run_files = list((job_folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, run_files
    losses = {}
    for record in wandb_records(run_files[0]):
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            if "train/loss" in items:
                losses[items["train/global_step"]] = items["train/loss"]
    return losses


def trackio_losses(project: str, run: str) -> dict[int, float]:
    """Reads TRACKIO_DIR as it was when trackio was first imported in this process."""
    from trackio.sqlite_storage import SQLiteStorage

    return {log["train/global_step"]: log["train/loss"]
            for log in SQLiteStorage.get_logs(project, run) if "train/loss" in log}
