"""Sweeps in the console: under the New job form, a section that queues several runs of the form
with a few values varied; in the Jobs tab, the sweep view: its runs side by side, best first,
their loss curves overlaid, and Cancel sweep."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import yaml

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.jobs.sweep_spec import MAX_RUNS, describe
from engine.console.people.users import NotYourJob, User
from ui.api import user_of
from ui.charts import compare_chart
from ui.new_job import FIELD_NAMES, error_text, submission_from
from ui.safe_text import as_text

EXAMPLE = "learning_rate: [1.0e-4, 3.0e-4]\nlora_r: [8, 16]\n"
PRIVATE = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
RUN_COLUMNS = ["rank", "job id", "values", "status", "step", "best eval loss", "best loss"]


def values_to_try(text: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"values to try: not valid YAML{where}") from None
    if not isinstance(values, dict) or not values:
        raise ConfigError("values to try: one field per line with its values, e.g. "
                          "learning_rate: [1.0e-4, 3.0e-4]")
    return values


def sweep_request(base: dict[str, Any], text: str, mode: str, trials: Any,
                  name: str) -> dict[str, Any]:
    """The /submit_sweep request the form makes: its fields are the base, the job name goes
    (each run is named by the sweep and its values)."""
    request: dict[str, Any] = {"base": {k: v for k, v in base.items() if k != "name"},
                               "name": (name or "").strip() or "sweep"}
    if mode == "random":
        request.update(random=values_to_try(text), trials=int(trials or 0))
    else:
        request["grid"] = values_to_try(text)
    return request


def create_sweep_form(engine: Engine, preset: gr.Dropdown, widgets: dict[str, Any]) -> None:
    with gr.Accordion("Sweep: several runs of this form, a few values varied", open=False):
        text = gr.Code(EXAMPLE, language="yaml", label="Values to try (YAML: a field and its "
                       "values per line; random also takes {low, high, log: true})", lines=4)
        with gr.Row():
            mode = gr.Radio(["grid", "random"], value="grid", label="Runs",
                            info="grid: every combination; random: trials drawn from them")
            trials = gr.Number(4, precision=0, minimum=1, maximum=MAX_RUNS,
                               label="Trials (random)")
            name = gr.Textbox(label="Sweep name", placeholder="sweep")
        submit = gr.Button("Submit sweep", elem_id="submit-sweep")
        message = gr.Markdown(elem_id="sweep-message")

    def sweep_from_form(preset_name: str, text: str, mode: str, trials: Any, name: str, *values,
                     request: gr.Request = None) -> str:
        try:
            base = submission_from(preset_name, FIELD_NAMES, values)
            sweep = engine.sweeps.submit(user_of(engine, request),
                                         sweep_request(base, text, mode, trials, name))
        except (ConfigError, ValueError) as exc:
            return error_text(exc, "**Sweep not submitted.**")
        return (f"**Queued sweep** `{sweep['sweep_id']}`: {len(sweep['job_ids'])} runs. Follow "
                f"it under **Sweeps** in the **Jobs** tab.")

    inputs = [widgets[n] for n in FIELD_NAMES]
    submit.click(sweep_from_form, [preset, text, mode, trials, name, *inputs], message, **PRIVATE)


def runs_frame(summary: dict[str, Any]) -> pd.DataFrame:
    def loss(value: Any) -> float | None:
        return round(value, 4) if isinstance(value, (int, float)) else None

    # A table shows text as it is (no Markdown): the values are only cut short.
    return pd.DataFrame([[rank, run["job_id"], describe(run["values"])[:200],
                          run["status"], run["step"], loss(run["best_eval_loss"]),
                          loss(run["best_loss"])]
                         for rank, run in enumerate(summary["runs"], start=1)],
                        columns=RUN_COLUMNS)


def summary_text(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    best = summary["best"]
    by = "eval loss" if summary["ranked_by"] == "eval_loss" else "training loss"
    won = (f"best by {by}: `{best['job_id']}` ({as_text(describe(best['values']), 200)}, "
           f"{best[summary['ranked_by']]:.4f})" if best else f"no {by} yet")
    state = "finished" if summary["finished"] else "in progress"
    return (f"**{as_text(summary['name'] or 'sweep', 100)}** · `{summary['sweep_id']}` · "
            f"{state} · {counts} · {won}")


def sweep_choices(engine: Engine, user: User):
    """The sweep chooser's entries, newest first (refreshed with the job table)."""
    return gr.update(choices=[(f"{s['name']} ({s['sweep_id']}, {s['runs']} runs)", s["sweep_id"])
                              for s in engine.sweeps.list(user)])


def create_sweeps_view(engine: Engine) -> gr.Dropdown:
    """The Sweeps view; returns its sweep chooser, whose entries the job table's refresh keeps
    current."""
    with gr.Accordion("Sweeps", open=False):
        chosen = gr.Dropdown([], label="Sweep", elem_id="sweep-choice")
        text = gr.Markdown("Choose a sweep.", elem_id="sweep-summary")
        runs = gr.Dataframe(None, headers=RUN_COLUMNS, interactive=False, max_height=260,
                            elem_id="sweep-runs")
        curves = gr.Plot(label="Loss of the runs", elem_id="sweep-chart")
        with gr.Row():
            refresh = gr.Button("Refresh", elem_id="refresh-sweep")
            cancel = gr.Button("Cancel sweep", variant="stop", elem_id="cancel-sweep")

    def show(sweep_id: str | None, request: gr.Request = None):
        if not sweep_id:
            return "Choose a sweep.", None, None
        user = user_of(engine, request)
        try:
            summary = engine.sweeps.get(user, sweep_id)
        except ConfigError as exc:
            return as_text(str(exc), 300), None, None
        jobs = {run["job_id"]: (run["name"], engine.views.get_metrics(user, run["job_id"], 0))
                for run in summary["runs"]}
        return summary_text(summary), runs_frame(summary), compare_chart(jobs)

    def do_cancel(sweep_id: str | None, request: gr.Request = None):
        if not sweep_id:
            return "Choose a sweep to cancel.", gr.skip(), gr.skip()
        try:
            result = engine.sweeps.cancel(user_of(engine, request), sweep_id)
        except (ConfigError, NotYourJob) as exc:
            return f"**Not cancelled.** {as_text(str(exc), 300)}", gr.skip(), gr.skip()
        text_, frame, chart = show(sweep_id, request)
        return f"Cancelled {len(result['cancelled'])} runs. {text_}", frame, chart

    gr.on([chosen.change, refresh.click], show, chosen, [text, runs, curves], **PRIVATE)
    cancel.click(do_cancel, chosen, [text, runs, curves], **PRIVATE)
    return chosen
