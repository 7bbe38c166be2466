"""What the Jobs tab shows, as pure functions of job and analytics dicts: the table's rows, the
job's header, progress bar, analytics line, checkpoints and config. No Gradio here: these are
tested without a browser."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from engine.console.people.users import User
from engine.console.records.job import JobStatus, available_actions
from ui.safe_text import as_text

TABLE_COLUMNS = ["name", "status", "queue", "owner", "priority", "method", "model", "progress",
                 "loss", "started", "duration", "job id"]
# The job view's buttons, in order, and the action each needs the state machine to allow.
ACTION_BUTTONS = ("pause", "resume", "cancel", "download_model", "download_logs", "export_model",
                  "export_gguf", "delete")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_text(progress: dict[str, Any]) -> str:
    step, total = progress.get("step") or 0, progress.get("total_steps")
    return f"{step}/{total} ({100 * step / total:.0f}%)" if total else (f"{step}" if step else "")


def job_table(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        started = job["started_at"]
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
            # All attempts together: a resumed job's duration does not start again at zero.
            "duration": format_duration(job.get("run_s")),
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
    if (job.get("attempt") or 1) > 1 and job.get("run_s"):
        parts[-1] += " this attempt"
        parts.append(f"{format_duration(job['run_s'])} over {job['attempt']} attempts")
    bar = f'<div class="td-bar" style="width:{percent:.1f}%"></div>'
    return (f'<div class="td-progress">{bar}</div>'
            f'<div class="td-progress-text">{" · ".join(parts)}</div>')


def header(job: dict[str, Any], user: User) -> str:
    status = job["status"] + (f" — {job['requested']} requested" if job.get("requested") else "")
    view_only = not user.is_admin and user.name != job["owner"]
    owner = as_text(job["owner"])
    lines = [f"### {as_text(job['name'])}  ·  `{job['job_id']}`",
             f"**Status:** <span class='td-status td-{html.escape(job['status'])}'>{status}</span>"
             f" · owner {owner} · priority {job['priority']}"
             f" · attempt {job['attempt']}"
             + (" · shared" if job.get("shared") else "")
             + (f" · *view only: {owner}'s job*" if view_only else "")]
    if job.get("unrecorded"):
        lines.append(f"**Not recorded yet:** {as_text(job['unrecorded'])}")
    if job.get("damaged"):
        lines.append(f"**Damaged record:** {as_text(job['damaged'])}")
    if job.get("notify_error"):
        lines.append(f"**Notification not delivered:** {as_text(job['notify_error'], 300)}")
    for change in job.get("microbatch_changes") or []:
        before, after = change["from"], change["to"]
        lines.append(f"**Out of memory at step {change['at_step']}:** micro-batch "
                     f"{before['per_device_train_batch_size']} → "
                     f"{after['per_device_train_batch_size']}, gradient accumulation "
                     f"{before['gradient_accumulation_steps']} → "
                     f"{after['gradient_accumulation_steps']} (same effective batch), continued "
                     f"from {change.get('resumed_from') or 'the start'}")
    cluster = (job.get("progress") or {}).get("cluster") or job.get("cluster_job")
    if cluster:
        where = (f"Slurm job **{as_text(str(cluster.get('id', '?')))}**"
                 + (f" · {as_text(cluster['state'].lower())}" if cluster.get("state") else "")
                 + (f" ({as_text(cluster['reason'])})" if cluster.get("reason") else "")
                 + (f" on {as_text(cluster['nodes'])}" if cluster.get("nodes") else ""))
        lines.append(where)
    if job["status"] == JobStatus.QUEUED and job.get("position"):
        lines.append(f"Position in queue: **{job['position']}**"
                     + (f" ({as_text(job['waiting'])})" if job.get("waiting") else ""))
    if job.get("error"):
        lines.append(f"**Error:** {as_text(job['error'].splitlines()[0])}")
    return "\n\n".join(lines)


def enabled_actions(job: dict[str, Any] | None, user: User) -> set[str]:
    """The job view's buttons that may be pressed: what the state machine allows, and only for
    the job's owner or an admin ("share" too)."""
    if job is None or (not user.is_admin and user.name != job["owner"]):
        return set()
    if job.get("unrecorded"):
        return set()  # its end is not written down yet: nothing else could be either
    enabled = set(available_actions(job["status"], job.get("requested"))) | {"share"}
    has_model = job["status"] == JobStatus.COMPLETED or bool(job.get("checkpoints"))
    if has_model:
        enabled.update(("download_model", "export_gguf"))
        if job["config"].get("adapter") in ("lora", "qlora"):
            enabled.add("export_model")
    if job["status"] != JobStatus.QUEUED or job.get("attempt", 0) > 0:
        enabled.add("download_logs")
    return enabled


def analytics_text(analytics: dict[str, Any]) -> str:
    def number(value, unit="", digits=1):
        return f"{value:.{digits}f}{unit}" if isinstance(value, (int, float)) else "—"

    parts = [f"**steps/s** {number(analytics.get('steps_per_s'), digits=2)}",
             f"**samples/s** {number(analytics.get('samples_per_s'))}",
             f"**tokens/s** {number(analytics.get('tokens_per_s'), digits=0)}",
             f"**best loss** {number(analytics.get('best_loss'), digits=4)}"
             + (f" at step {analytics['best_step']}" if analytics.get("best_step") else ""),
             f"**trend** {analytics.get('loss_trend') or '—'}"]
    if analytics.get("evaluations"):
        parts.insert(4, f"**best eval loss** {number(analytics.get('best_eval_loss'), digits=4)}"
                        f" at step {analytics.get('best_eval_step')} (last "
                        f"{number(analytics.get('eval_loss'), digits=4)}, "
                        f"{analytics['evaluations']} evaluations)")
    if analytics.get("stopped_early"):
        parts.append(f"**stopped early**: {analytics['stopped_early']}")
    peak = analytics.get("peak_gpu_mem_mb") or analytics.get("peak_rss_mb")
    if peak:
        parts.append(f"**peak {'GPU' if analytics.get('peak_gpu_mem_mb') else 'RAM'}** "
                     f"{peak / 1024:.2f} GB")
    phases = analytics.get("phases") or {}
    if phases:
        parts.append("**time** " + ", ".join(f"{k.removesuffix('_s')} {format_duration(v)}"
                                             for k, v in phases.items()))
    return " · ".join(parts)


def checkpoints_frame(checkpoints: list[dict[str, Any]]) -> pd.DataFrame:
    def rounded(value: Any) -> float | None:
        return round(value, 4) if isinstance(value, float) else None

    columns = ["name", "step", "size MB", "loss"]
    if any(isinstance(c.get("eval_loss"), float) for c in checkpoints):
        columns.append("eval loss")  # only for a job that evaluates
    return pd.DataFrame(
        [{"name": c["name"] + (" (best)" if c["best"] else ""), "step": c["step"],
          "size MB": round(c["size_bytes"] / 2**20, 2), "loss": rounded(c["loss"]),
          "eval loss": rounded(c.get("eval_loss"))}
         for c in checkpoints], columns=columns)


def config_text(job: dict[str, Any]) -> str:
    return yaml.safe_dump({"command": job["command"], "config": job["config"],
                           "resolved automatically": job["resolved"]}, sort_keys=False)
