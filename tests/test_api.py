"""The API contract, driven only through gradio_client against `python app.py` on a free port."""

import time
import zipfile
from pathlib import Path

import pytest
from harness import call, console_client, stop_console, wait_until
from harness import start_console as launch_console

from engine.methods import METHODS
from engine.presets import PresetLibrary

pytestmark = pytest.mark.slow  # real trainers and consoles

CONTRACT = {"/health", "/list_presets", "/get_preset", "/submit_job", "/list_jobs", "/get_job",
            "/get_metrics", "/pause_job", "/resume_job", "/cancel_job", "/list_checkpoints",
            "/download_model", "/download_logs", "/job_analytics", "/system_stats"}


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("api") / "workspace"
    process, url = launch_console(workspace)
    yield console_client(url), workspace
    stop_console(process)


def test_the_api_page_shows_exactly_the_contract(console):
    client, _ = console
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    actions = {"/export_model", "/try_model", "/set_priority", "/check_job", "/upload_dataset",
               "/share_job", "/delete_job", "/submit_sweep", "/get_sweep", "/list_sweeps",
               "/cancel_sweep", "/export_gguf"}
    assert named == CONTRACT | actions  # the contract plus the console's further actions


def test_a_job_through_the_whole_contract(console, tmp_path):
    client, workspace = console
    health = call(client, "/health")
    assert health["status"] == "ok" and health["device"].startswith("cpu")
    assert {"version", "gpus", "queued", "running"} <= set(health)
    presets = call(client, "/list_presets")
    assert presets[0] == {"name": "basic-fine-tune", "title": "Basic fine-tune",
                          "description": presets[0]["description"], "method": "sft"}
    assert [p["name"] for p in presets] == PresetLibrary().names()
    assert {p["method"] for p in presets} == set(METHODS)  # a template for every method
    assert call(client, "/get_preset", "dpo-preference")["method"] == "dpo"

    submitted = call(client, "/submit_job", {"max_steps": 15})
    job_id = submitted["job_id"]
    assert submitted["status"] == "queued" and submitted["position"] == 1

    seen, last_step, deadline = [], 0, time.time() + 120
    while time.time() < deadline:
        new = call(client, "/get_metrics", job_id, last_step)
        assert all(r["step"] > last_step for r in new)
        seen += new
        last_step = seen[-1]["step"] if seen else 0
        job = call(client, "/get_job", job_id)
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    seen += call(client, "/get_metrics", job_id, last_step)
    assert job["status"] == "completed", job["error"]
    assert [r["step"] for r in seen] == list(range(1, 16))  # every step once, in order
    assert {"job_id", "name", "owner", "status", "priority", "config", "progress", "created_at",
            "started_at", "finished_at", "error"} <= set(job)
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 15

    analytics = call(client, "/job_analytics", job_id)
    losses = [r["loss"] for r in seen]
    assert analytics["best_loss"] == min(losses)
    assert analytics["best_step"] == seen[losses.index(min(losses))]["step"]
    assert analytics["elapsed_s"] > 0 and analytics["steps_per_s"] > 0 and analytics["eta_s"] == 0

    checkpoints = call(client, "/list_checkpoints", job_id)
    assert [c["name"] for c in checkpoints] == ["checkpoint-15"]
    assert checkpoints[0]["size_bytes"] > 0

    model_zip = Path(call(client, "/download_model", job_id, None))
    assert model_zip.name == f"model_{job_id}.zip"
    with zipfile.ZipFile(model_zip) as archive:
        assert {"adapter_model.safetensors", "adapter_config.json"} <= set(archive.namelist())
    checkpoint_zip = Path(call(client, "/download_model", job_id, "checkpoint-15"))
    assert checkpoint_zip.name == f"model_{job_id}_checkpoint-15.zip"
    logs_zip = Path(call(client, "/download_logs", job_id))
    assert logs_zip.name == f"logs_{job_id}.zip"
    with zipfile.ZipFile(logs_zip) as archive:
        assert {"training.log", "metrics.jsonl", "job.yaml"} <= set(archive.namelist())
        assert len(archive.read("metrics.jsonl").decode().splitlines()) == 15

    assert [j["job_id"] for j in call(client, "/list_jobs", "completed")] == [job_id]
    stats = call(client, "/system_stats")
    assert stats["cpu_count"] >= 1 and stats["gpus"] == [] and stats["gpu_note"]
    assert stats["queue"]["completed"] == 1


def test_pause_resume_and_cancel_of_a_queued_job(console):
    client, _ = console
    blocker = call(client, "/submit_job", {"max_steps": 100000, "save_steps": 100000})["job_id"]
    wait_until(lambda: call(client, "/get_job", blocker)["progress"]["step"] >= 1, 120,
               "the blocking job to train")
    waiting = call(client, "/submit_job", {"max_steps": 3, "name": "waiting"})["job_id"]
    assert call(client, "/get_job", waiting)["status"] == "queued"  # behind the blocker
    assert call(client, "/pause_job", waiting)["status"] == "paused"
    assert call(client, "/resume_job", waiting, None)["status"] == "queued"
    assert call(client, "/cancel_job", waiting)["status"] == "cancelled"
    assert call(client, "/get_job", waiting)["started_at"] is None  # all of it while queued
    # A running job is asked to stop: it is cancelled once its trainer has ended.
    answer = call(client, "/cancel_job", blocker)
    assert (answer["status"], answer["requested"]) == ("running", "cancel"), answer
    job = wait_until(lambda: (j := call(client, "/get_job", blocker))["status"] != "running"
                     and j, 30, "the blocking job to stop")
    assert job["status"] == "cancelled", job["error"]


@pytest.mark.parametrize("args,message", [
    (("/submit_job", {"learning_rate": -1}), "learning_rate must be > 0, got -1"),
    (("/submit_job", {"adapter": "nope"}), "adapter must be one of lora, qlora, full"),
    (("/submit_job", {"dataset": "/no/such.jsonl"}), "dataset /no/such.jsonl: no such file"),
    (("/submit_job", {"learnig_rate": 1e-3}), "did you mean learning_rate?"),
    (("/get_job", "nope"), "no job with id 'nope'"),
    (("/get_preset", "nope"), "preset 'nope' does not exist"),
    (("/resume_job", "nope", None), "no job with id 'nope'"),
    (("/list_jobs", "done"), "status must be one of queued"),
    (("/download_model", "nope", None), "no job with id 'nope'"),
])
def test_invalid_requests_come_back_as_errors_and_change_nothing(console, args, message):
    client, _ = console
    before = call(client, "/list_jobs", None)
    with pytest.raises(Exception) as err:
        call(client, *args)
    assert message in str(err.value)
    assert call(client, "/list_jobs", None) == before
