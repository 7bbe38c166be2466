"""The API contract (the README's "The API" section lists every endpoint): one named endpoint
per action, plain JSON in and out, files for downloads and uploads. Every endpoint calls the
same engine method as the UI's button, under the endpoint's name; each function's docstring is
its description on the API page. Scripts call these names: an endpoint is never renamed."""

from pathlib import Path

import gradio as gr

from engine.console.engine import Engine
from engine.console.people.users import User
from ui.arguments import checked_arguments
from ui.errors import as_gradio_errors


def user_of(engine: Engine, request: gr.Request | None) -> User:
    """The acting user: the logged-in one (Gradio has checked the password), or "local", an
    admin, only when the console has no logins. The one place a request names its caller."""
    return engine.users.get(getattr(request, "username", None) if request else None)


def endpoint(fn):
    """An API endpoint: its arguments checked against its type hints, its errors as gr.Error."""
    return as_gradio_errors(checked_arguments(fn))


def register_api(engine: Engine) -> None:
    """Call inside the Blocks context."""
    for group in (_console_endpoints, _queue_endpoints, _control_endpoints, _result_endpoints,
                  _sweep_endpoints):
        for fn in group(engine):
            gr.api(endpoint(fn), api_name=fn.__name__, concurrency_limit=None)
    _register_file_endpoints(engine)


def _console_endpoints(engine: Engine) -> list:
    def health() -> dict:
        """Console status: version, device, GPUs, and how many jobs are queued and running."""
        return engine.health()

    def list_presets() -> list:
        """The training templates: name, title, description, method."""
        return engine.list_presets()

    def get_preset(name: str | None) -> dict:
        """A preset's full config (schema defaults with the preset's values); null: the default
        preset's."""
        return engine.get_preset(name)

    def system_stats() -> dict:
        """CPU, memory, disk and per-GPU telemetry, and the queue's counts."""
        return engine.system_stats()

    return [health, list_presets, get_preset, system_stats]


def _queue_endpoints(engine: Engine) -> list:
    def check_job(config: dict, request: gr.Request = None) -> dict:
        """Check a config as /submit_job would, without queueing it: the resolved config, what
        was chosen automatically, the dataset's format, row count and first rows, and notes
        (its length in steps and time, what does not suit this machine)."""
        user = user_of(engine, request)
        resolution = engine.jobs.check(user, config)
        summary = resolution.dataset
        # No "path" keys: gradio_client would take such a dict for a file and download it.
        dataset = summary and {"location": summary.path, "format": summary.format,
                               "rows": summary.rows, "preview": summary.preview}
        return {"valid": True, "config": resolution.config.to_dict(),
                "resolved": resolution.resolved, "dataset": dataset,
                "notes": engine.advice(user, resolution)}

    def submit_job(config: dict, request: gr.Request = None) -> dict:
        """Queue a job. config: optional `preset` (default basic-fine-tune) plus overrides."""
        return engine.jobs.submit(user_of(engine, request), config)

    def list_jobs(status: str | None = None, request: gr.Request = None) -> list:
        """Job summaries, newest first; status filters (queued, running, paused, completed,
        failed, cancelled) or null for all. Other users' jobs show no paths or error details."""
        return engine.views.list_jobs(user_of(engine, request), status or None)

    def get_job(job_id: str, request: gr.Request = None) -> dict:
        """The full job: config, status, progress, last metrics, error, checkpoints (paths, log
        details and errors only for its owner and admins)."""
        return engine.views.get_job(user_of(engine, request), job_id)

    def get_metrics(job_id: str, since_step: int = 0, request: gr.Request = None) -> list:
        """Metric records with step > since_step."""
        return engine.views.get_metrics(user_of(engine, request), job_id, since_step)

    return [check_job, submit_job, list_jobs, get_job, get_metrics]


def _control_endpoints(engine: Engine) -> list:
    def pause_job(job_id: str, request: gr.Request = None) -> dict:
        """Pause: a running job writes a checkpoint at its next step and stops; a queued one
        leaves the queue."""
        return engine.jobs.pause(user_of(engine, request), job_id)

    def resume_job(job_id: str, checkpoint: str | None = None, changes: dict | None = None,
                   allow_inexact: bool = False, request: gr.Request = None) -> dict:
        """Queue a paused, failed or cancelled job again, from `checkpoint` or the latest.
        Optional `changes` edit its config; ones that break exact continuation (batch size,
        accumulation, seed) need allow_inexact."""
        return engine.jobs.resume(user_of(engine, request), job_id, checkpoint or None,
                                  changes or None, bool(allow_inexact))

    def cancel_job(job_id: str, request: gr.Request = None) -> dict:
        """Cancel a queued or running job."""
        return engine.jobs.cancel(user_of(engine, request), job_id)

    def set_priority(job_id: str, priority: int, request: gr.Request = None) -> dict:
        """Reorder the queue (owner or admin): higher starts first, ties in submit order.
        Returns the job summary with its new queue position."""
        return engine.jobs.set_priority(user_of(engine, request), job_id, priority)

    def share_job(job_id: str, shared: bool = True, request: gr.Request = None) -> dict:
        """Let every user try, download and train on this job's model (owner or admin); false
        stops sharing."""
        return engine.jobs.share(user_of(engine, request), job_id, shared)

    def delete_job(job_id: str, request: gr.Request = None) -> dict:
        """Delete a job that is not queued or running: its record, folder and exports (owner or
        admin). Frees room under the max_jobs quota."""
        return engine.jobs.delete(user_of(engine, request), job_id)

    return [pause_job, resume_job, cancel_job, set_priority, share_job, delete_job]


def _result_endpoints(engine: Engine) -> list:
    def list_checkpoints(job_id: str, request: gr.Request = None) -> list:
        """Complete checkpoints: name, step, size_bytes, created_at, loss."""
        return engine.views.list_checkpoints(user_of(engine, request), job_id)

    def job_analytics(job_id: str, request: gr.Request = None) -> dict:
        """Elapsed, ETA, steady-state rates, best loss and step, loss trend, phases."""
        return engine.views.job_analytics(user_of(engine, request), job_id)

    def try_model(job_id: str, prompt: str, checkpoint: str | None = None,
                  max_new_tokens: int = 64, request: gr.Request = None) -> dict:
        """Answers of the base model and the trained one (final or a checkpoint) to a prompt
        (owner, admin, or anyone for a shared job; one generation at a time per user)."""
        return engine.artifacts.try_model(user_of(engine, request), job_id, prompt,
                                          checkpoint or None, max_new_tokens)

    return [list_checkpoints, job_analytics, try_model]


def _sweep_endpoints(engine: Engine) -> list:
    def submit_sweep(sweep: dict, request: gr.Request = None) -> dict:
        """Queue several runs of one config as one sweep: {name, base: a /submit_job config,
        grid: {field: [values]} (every combination) or random: {field: [values] or {low, high,
        log}} with trials and seed, priority}. Every run is checked and must fit the quotas
        before any is queued. Returns {sweep_id, name, job_ids}."""
        return engine.sweeps.submit(user_of(engine, request), sweep)

    def get_sweep(sweep_id: str, request: gr.Request = None) -> dict:
        """A sweep's runs side by side, ranked by evaluation loss (training loss for runs that
        do not evaluate): values, status, best eval loss, best and last loss; and the best run."""
        return engine.sweeps.get(user_of(engine, request), sweep_id)

    def list_sweeps(request: gr.Request = None) -> list:
        """Every sweep, newest first: id, name, owner, runs and how many are in each status."""
        return engine.sweeps.list(user_of(engine, request))

    def cancel_sweep(sweep_id: str, request: gr.Request = None) -> dict:
        """Cancel every run of a sweep that has not finished (owner or admin)."""
        return engine.sweeps.cancel(user_of(engine, request), sweep_id)

    return [submit_sweep, get_sweep, list_sweeps, cancel_sweep]


def _register_file_endpoints(engine: Engine) -> None:
    """Files in and out need File components: hidden ones serve the API."""
    with gr.Column(visible=False):
        job_id, checkpoint = gr.Textbox(label="job_id"), gr.Textbox(label="checkpoint")
        dataset_file = gr.File(label="dataset file")
        quantization = gr.Textbox(label="quantization")
        inputs = {"upload_dataset": [dataset_file],
                  "download_model": [job_id, checkpoint],
                  "download_logs": [job_id],
                  "export_model": [job_id, checkpoint],
                  "export_gguf": [job_id, checkpoint, quantization]}
        triggers = {name: gr.Button(name) for name in inputs}
        results = {name: gr.JSON() if name == "upload_dataset" else gr.File() for name in inputs}
    functions = {fn.__name__: fn for fn in _file_endpoints(engine)}
    for name in inputs:
        triggers[name].click(endpoint(functions[name]), inputs[name], results[name], api_name=name,
                             concurrency_limit=None)


def _file_endpoints(engine: Engine) -> list:
    artifacts = engine.artifacts

    def download_model(job_id: str, checkpoint: str | None, request: gr.Request = None) -> str:
        return str(artifacts.download_model(user_of(engine, request), job_id, checkpoint or None))

    def download_logs(job_id: str, request: gr.Request = None) -> str:
        return str(artifacts.download_logs(user_of(engine, request), job_id))

    def export_model(job_id: str, checkpoint: str | None, request: gr.Request = None) -> str:
        """Merge a LoRA/QLoRA adapter into its base model; a zip of the standalone model."""
        return str(artifacts.export_model(user_of(engine, request), job_id, checkpoint or None))

    def export_gguf(job_id: str, checkpoint: str | None, quantization: str | None,
                    request: gr.Request = None) -> str:
        """The model (an adapter merged first) as GGUF for llama.cpp and Ollama, quantization
        f32, f16, bf16 or q8_0; a zip with model.gguf and an Ollama Modelfile."""
        return str(artifacts.export_gguf(user_of(engine, request), job_id, checkpoint or None,
                                         quantization or "q8_0"))

    def upload_dataset(file: str | None, request: gr.Request = None) -> dict:
        """Store a dataset file for the caller (within their upload quota); returns
        {dataset: the path to name in /submit_job, bytes, stored_mb}."""
        if not file:
            raise gr.Error("no file was uploaded")
        return artifacts.upload_dataset(user_of(engine, request), file, Path(file).name)

    return [download_model, download_logs, export_model, export_gguf, upload_dataset]
