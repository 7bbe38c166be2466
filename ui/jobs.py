"""The Jobs tab: a self-refreshing job table, and the selected job's view: status, progress with
ETA, actions enabled only when legal, log tail, config, checkpoints and live charts."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from engine.api import Engine
from engine.job import JobStatus, can_transition
from engine.users import User
from ui.charts import compare_chart, job_charts
from ui.api import user_of
from ui.errors import as_gradio_errors
from ui.safe_text import as_text

TABLE_COLUMNS = ["name", "status", "queue", "owner", "priority", "method", "model", "progress",
                 "loss", "started", "duration", "job id"]
REFRESH_S = 1.0


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_text(progress: dict[str, Any]) -> str:
    step, total = progress.get("step") or 0, progress.get("total_steps")
    return f"{step}/{total} ({100 * step / total:.0f}%)" if total else (f"{step}" if step else "")


def job_table(jobs: list[dict[str, Any]], now: float | None = None) -> pd.DataFrame:
    now = time.time() if now is None else now
    rows = []
    for job in jobs:
        started, finished = job["started_at"], job["finished_at"]
        status = job["status"] + (f" ({job['requested']}ing)" if job.get("requested") else "")
        rows.append({
            "name": job["name"], "status": status,
            "queue": job.get("position") or "",  # the order queued jobs will start in
            "owner": job["owner"], "priority": job["priority"],
            "method": f"{job['method']}/{job['adapter']}",
            "model": Path(job["model"] or "").name or job["model"],
            "progress": progress_text(job["progress"]),
            "loss": f"{job['loss']:.4f}" if isinstance(job.get("loss"), float) else "",
            "started": time.strftime("%m-%d %H:%M:%S", time.localtime(started)) if started else "",
            "duration": format_duration(((finished or now) - started) if started else None),
            "job id": job["job_id"],
        })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def progress_bar(job: dict[str, Any], analytics: dict[str, Any]) -> str:
    progress = job["progress"]
    step, total = progress.get("step") or 0, progress.get("total_steps")
    percent = 100 * step / total if total else 0
    eta = analytics.get("eta_s")
    phase = progress.get("phase")
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    if job["status"] == JobStatus.RUNNING and phase and phase != "training":
        parts.append(html.escape(str(phase)))
    if eta is not None and job["status"] == JobStatus.RUNNING:
        parts.append(f"ETA {format_duration(eta)}")
    parts.append(f"elapsed {format_duration(analytics.get('elapsed_s'))}")
    return (f'<div class="td-progress"><div class="td-bar" style="width:{percent:.1f}%"></div></div>'
            f'<div class="td-progress-text">{" · ".join(parts)}</div>')


def header(job: dict[str, Any], user: User | None = None) -> str:
    status = job["status"] + (f" — {job['requested']} requested" if job.get("requested") else "")
    view_only = user is not None and not user.is_admin and user.name != job["owner"]
    owner = as_text(job["owner"])
    lines = [f"### {as_text(job['name'])}  ·  `{job['job_id']}`",
             f"**Status:** <span class='td-status td-{html.escape(job['status'])}'>{status}</span>"
             f" · owner {owner} · priority {job['priority']}"
             f" · attempt {job['attempt']}"
             + (" · shared" if job.get("shared") else "")
             + (f" · *view only: {owner}'s job*" if view_only else "")]
    if job.get("damaged"):
        lines.append(f"**Damaged record:** {as_text(job['damaged'])}")
    if job["status"] == JobStatus.QUEUED and job.get("position"):
        lines.append(f"Position in queue: **{job['position']}**"
                     + (f" ({as_text(job['waiting'])})" if job.get("waiting") else ""))
    if job.get("error"):
        lines.append(f"**Error:** {as_text(job['error'].splitlines()[0])}")
    return "\n\n".join(lines)


def actions_state(job: dict[str, Any] | None, user: User | None = None) -> list[dict]:
    """Pause, Resume, Cancel, Download model, Download logs, Export merged, Share, Delete:
    enabled only when legal, and only for the job's owner or an admin."""
    if job is None or (user is not None and not user.is_admin and user.name != job["owner"]):
        return [gr.update(interactive=False)] * 7 + [gr.update(interactive=False, value="Share")]
    status, requested = job["status"], job.get("requested")
    can_pause = status in (JobStatus.QUEUED, JobStatus.RUNNING) and not requested
    can_resume = can_transition(status, JobStatus.QUEUED)
    can_cancel = status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED) and requested != "cancel"
    has_model = status == JobStatus.COMPLETED or bool(job.get("checkpoints"))
    has_logs = status != JobStatus.QUEUED or job.get("attempt", 0) > 0
    can_merge = has_model and job["config"].get("adapter") in ("lora", "qlora")
    can_delete = status not in (JobStatus.QUEUED, JobStatus.RUNNING)
    return ([gr.update(interactive=v) for v in (can_pause, can_resume, can_cancel, has_model,
                                                has_logs, can_merge, can_delete)]
            + [gr.update(interactive=True, value="Unshare" if job.get("shared") else "Share")])


def create_jobs_tab(engine: Engine) -> None:
    table = gr.Dataframe(job_table([]), label="Jobs (newest first) — select a row to open it",
                         interactive=False, wrap=False, max_height=320, elem_id="job-table")
    with gr.Row():
        job_id = gr.Textbox(label="Job id", placeholder="select a row above", scale=3,
                            elem_id="selected-job")
        checkpoint = gr.Dropdown([], value=None, label="Checkpoint (for resume and download)",
                                 allow_custom_value=True, scale=2)
    title = gr.Markdown("No job selected.", elem_id="job-header")
    bar = gr.HTML("", elem_id="job-progress")
    with gr.Row():
        pause = gr.Button("Pause", interactive=False, elem_id="pause-button")
        resume = gr.Button("Resume", interactive=False, elem_id="resume-button")
        cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-button")
        download_model = gr.Button("Download model", interactive=False)
        download_logs = gr.Button("Download logs", interactive=False)
        export_merged = gr.Button("Export merged model", interactive=False)
        delete = gr.Button("Delete", interactive=False, elem_id="delete-button")
        share = gr.Button("Share", interactive=False, elem_id="share-button")
    with gr.Row():
        priority = gr.Number(0, precision=0, label="Priority (higher starts first)", scale=1)
        set_priority = gr.Button("Set priority", scale=1, elem_id="set-priority-button")
    action_message = gr.Markdown()
    download = gr.File(label="Download", visible=False, interactive=False)
    with gr.Row():
        loss_plot = gr.Plot(label="Loss", elem_id="loss-chart")
        optimizer_plot = gr.Plot(label="Learning rate / grad norm")
    with gr.Row():
        throughput_plot = gr.Plot(label="Throughput")
        device_plot = gr.Plot(label="Device")
    analytics_md = gr.Markdown()
    with gr.Accordion("Try it: the trained model next to its base model", open=False):
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="What is the capital of Peru?", scale=4)
            generate = gr.Button("Generate", scale=1)
        gr.Markdown("Uses the checkpoint chosen above, or the final model; greedy decoding, "
                    "framed with the model's chat template. Runs in its own process.")
        with gr.Row():
            base_answer = gr.Textbox(label="Base model", lines=4, interactive=False)
            tuned_answer = gr.Textbox(label="Trained", lines=4, interactive=False)
    with gr.Accordion("Compare runs", open=False):
        compare_ids = gr.Dropdown([], multiselect=True, label="Jobs to overlay (loss, smoothed)")
        compare_plot = gr.Plot(label="Loss of several runs", elem_id="compare-chart")
    log_tail = gr.Textbox(label="Training log (last lines)", lines=12, max_lines=12,
                          autoscroll=True, interactive=False, elem_id="log-tail")
    with gr.Accordion("Config and command", open=False):
        config_code = gr.Code(language="yaml", lines=20, interactive=False)
    checkpoints_table = gr.Dataframe(None, headers=["name", "step", "size MB", "loss"],
                                     label="Checkpoints", interactive=False, max_height=200)
    shown_step = gr.State(-1)  # last step drawn in this browser: charts redraw only on change
    timer = gr.Timer(REFRESH_S)
    table_timer = gr.Timer(2.0)

    # ---- handlers ---------------------------------------------------------------------------

    def refresh_table(request: gr.Request = None):
        jobs = engine.list_jobs(user=user_of(engine, request))
        choices = [(f"{j['name']} ({j['job_id']})", j["job_id"]) for j in jobs]
        return job_table(jobs), gr.update(choices=choices)

    @as_gradio_errors
    def do_generate(selected: str, chosen: str | None, text: str, request: gr.Request = None):
        result = engine.try_model(selected, text, chosen or None, user=user_of(engine, request))
        return result["base"], result["tuned"]

    def do_compare(job_ids: list[str]):
        return compare_chart({job_id: (engine.get_job(job_id)["name"],
                                       engine.get_metrics(job_id, 0)) for job_id in job_ids or []})

    def select_row(data: pd.DataFrame, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return data.iloc[row]["job id"], -1

    def refresh_job(selected: str, drawn_step: int, request: gr.Request = None):
        return job_view(engine, selected, drawn_step, user_of(engine, request))

    @as_gradio_errors
    def do_pause(selected: str, request: gr.Request = None):
        job = engine.pause(selected, user_of(engine, request))
        return f"Pause requested for `{job['job_id']}`: it stops after its current step."

    @as_gradio_errors
    def do_resume(selected: str, chosen: str | None, request: gr.Request = None):
        job = engine.resume(selected, chosen or None, user=user_of(engine, request))
        return f"Job `{job['job_id']}` is queued again."

    @as_gradio_errors
    def do_cancel(selected: str, request: gr.Request = None):
        job = engine.cancel(selected, user_of(engine, request))
        return f"Cancel requested for `{job['job_id']}`."

    @as_gradio_errors
    def do_download_model(selected: str, chosen: str | None, request: gr.Request = None):
        path = engine.download_model(selected, chosen or None, user_of(engine, request))
        return gr.update(value=str(path), visible=True)

    @as_gradio_errors
    def do_export_merged(selected: str, chosen: str | None, request: gr.Request = None):
        path = engine.export_merged(selected, chosen or None, user_of(engine, request))
        return gr.update(value=str(path), visible=True)

    @as_gradio_errors
    def do_download_logs(selected: str, request: gr.Request = None):
        return gr.update(value=str(engine.download_logs(selected, user_of(engine, request))),
                         visible=True)

    @as_gradio_errors
    def do_delete(selected: str, request: gr.Request = None):
        job = engine.delete_job(selected, user_of(engine, request))
        return f"Job `{job['job_id']}` deleted with its folder.", ""

    @as_gradio_errors
    def do_share(selected: str, request: gr.Request = None):
        user = user_of(engine, request)
        shared = not engine.get_job(selected, user).get("shared")
        job = engine.share_job(selected, shared, user)
        return (f"Job `{job['job_id']}` is shared: everyone may try, download and train on its "
                f"model." if shared else f"Job `{job['job_id']}` is no longer shared.")

    @as_gradio_errors
    def do_set_priority(selected: str, priority: float, request: gr.Request = None):
        job = engine.set_priority(selected, int(priority or 0), user_of(engine, request))
        where = f"; queue position {job['position']}" if job.get("position") else ""
        return f"Priority of `{job['job_id']}` set to {job['priority']}{where}."


    view_outputs = [title, bar, checkpoint, checkpoints_table, log_tail, config_code, loss_plot,
                    optimizer_plot, throughput_plot, device_plot, analytics_md, shown_step,
                    pause, resume, cancel, download_model, download_logs, export_merged, delete,
                    share]
    private = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
    table_timer.tick(refresh_table, None, [table, compare_ids], **private)
    generate.click(do_generate, [job_id, checkpoint, prompt], [base_answer, tuned_answer], **private)
    compare_ids.change(do_compare, compare_ids, compare_plot, **private)
    table.select(select_row, table, [job_id, shown_step], **private)
    gr.on([timer.tick, job_id.change], refresh_job, [job_id, shown_step], view_outputs, **private)
    pause.click(do_pause, job_id, action_message, **private)
    resume.click(do_resume, [job_id, checkpoint], action_message, **private)
    cancel.click(do_cancel, job_id, action_message, **private)
    download_model.click(do_download_model, [job_id, checkpoint], download, **private)
    download_logs.click(do_download_logs, job_id, download, **private)
    export_merged.click(do_export_merged, [job_id, checkpoint], download, **private)
    delete.click(do_delete, job_id, [action_message, job_id], **private)
    share.click(do_share, job_id, action_message, **private)
    set_priority.click(do_set_priority, [job_id, priority], action_message, **private)


def job_view(engine: Engine, selected: str, drawn_step: int, user: User | None = None) -> list:
    """Everything the job view shows, for the job selected; charts only when a step is new."""
    outputs_when_empty = (["No job selected.", "", gr.skip(), gr.skip(), "", "", gr.skip(),
                           gr.skip(), gr.skip(), gr.skip(), gr.skip(), -1]
                          + actions_state(None))
    if not selected or not selected.strip():
        return outputs_when_empty
    try:
        job = engine.get_job(selected.strip(), user)
    except (KeyError, ValueError):
        return [f"No job with id {as_text(selected, 80)}.", ""] + outputs_when_empty[2:]
    analytics = engine.job_analytics(job["job_id"])
    last_step = (job["last_metrics"] or {}).get("step", 0)
    if last_step != drawn_step or not last_step:
        charts = list(job_charts(engine.get_metrics(job["job_id"], 0)))
    else:
        charts = [gr.skip()] * 4  # nothing new: fetch and send nothing
    checkpoints = pd.DataFrame(
        [{"name": c["name"] + (" (best)" if c["best"] else ""), "step": c["step"],
          "size MB": round(c["size_bytes"] / 2**20, 2),
          "loss": round(c["loss"], 4) if isinstance(c["loss"], float) else None}
         for c in job["checkpoints"]])
    names = [c["name"] for c in job["checkpoints"]]
    config_text = yaml.safe_dump({"command": job["command"], "config": job["config"],
                                  "resolved automatically": job["resolved"]}, sort_keys=False)
    return ([header(job, user), progress_bar(job, analytics), gr.update(choices=names),
             checkpoints, engine.log_tail(job["job_id"], user=user), config_text]
            + charts + [analytics_text(analytics), last_step] + actions_state(job, user))


def analytics_text(analytics: dict[str, Any]) -> str:
    def number(value, unit="", digits=1):
        return f"{value:.{digits}f}{unit}" if isinstance(value, (int, float)) else "—"

    parts = [f"**steps/s** {number(analytics.get('steps_per_s'), digits=2)}",
             f"**samples/s** {number(analytics.get('samples_per_s'))}",
             f"**tokens/s** {number(analytics.get('tokens_per_s'), digits=0)}",
             f"**best loss** {number(analytics.get('best_loss'), digits=4)}"
             + (f" at step {analytics['best_step']}" if analytics.get("best_step") else ""),
             f"**trend** {analytics.get('loss_trend') or '—'}"]
    peak = analytics.get("peak_gpu_mem_mb") or analytics.get("peak_rss_mb")
    if peak:
        parts.append(f"**peak {'GPU' if analytics.get('peak_gpu_mem_mb') else 'RAM'}** "
                     f"{peak / 1024:.2f} GB")
    phases = analytics.get("phases") or {}
    if phases:
        parts.append("**time** " + ", ".join(f"{k.removesuffix('_s')} {format_duration(v)}"
                                             for k, v in phases.items()))
    return " · ".join(parts)
