"""The Jobs tab: a self-refreshing job table, and the selected job's view: status, progress with
ETA, actions enabled only when legal, live charts, log tail, config and checkpoints.

The view's components live in one `JobView`; every handler returns a dict naming the components
it changes, so no list of outputs has to be kept in the same order in several places."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.components.plot import PlotData

from engine.console.engine import Engine
from engine.console.people.users import User
from engine.console.records.changes import job_key
from engine.console.records.job import JobStatus
from engine.jobfiles import GGUF_QUANTIZATIONS
from ui.api import user_of
from ui.charts import compare_chart, job_charts, run_events
from ui.errors import as_gradio_errors
from ui.job_format import (
    ACTION_BUTTONS,
    analytics_text,
    checkpoints_frame,
    config_text,
    enabled_actions,
    header,
    job_table,
    progress_bar,
)
from ui.live import ENDED_FOR_OTHERS, LiveStreams, event_number, numbered, session_of
from ui.safe_text import as_text
from ui.sweeps import create_sweeps_view, sweep_choices

TABLE_REFRESH_S = 2.0
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
ACTIVE_HEARTBEAT_S, IDLE_HEARTBEAT_S = 5.0, 60.0
PRIVATE = dict(api_visibility="private", concurrency_limit=None, show_progress="hidden")
# The log box follows the run: scrolled to its newest line on every change, unless the person
# is inside it (reading or selecting).
FOLLOW_LOG_JS = """() => { setTimeout(() => {
    const box = document.querySelector('#log-tail textarea');
    if (box && document.activeElement !== box) box.scrollTop = box.scrollHeight;
}, 0); }"""
FINAL_MODEL = "final model"  # the checkpoint dropdown's entry for the job's final weights


class DrawnCharts:
    """A job's charts, drawn and serialised at most once a second however many tabs show them
    (a job logs many steps a second; drawing is the costly part of a view)."""

    def __init__(self, size: int = 32, max_age_s: float = 1.0):
        self.size, self.max_age_s = size, max_age_s
        self._drawn: OrderedDict[str, tuple[str, float, tuple]] = OrderedDict()
        self._lock = threading.Lock()
        self._drawing: dict[str, threading.Lock] = {}  # one drawing at a time per run

    def _cached(self, run: str, key: str) -> tuple | None:
        with self._lock:
            if run in self._drawn:
                drawn_key, drawn_at, charts = self._drawn[run]
                if drawn_key == key or time.monotonic() - drawn_at < self.max_age_s:
                    self._drawn.move_to_end(run)
                    return charts
        return None

    def get(self, key: str, draw) -> tuple:
        """`key`: job@attempt@step; a drawing of the same job and attempt younger than
        max_age_s serves a later step too. Tabs asking at once (twenty opened on one job) wait
        for one drawing rather than each making its own."""
        run = key.rsplit("@", 1)[0]
        with self._lock:
            drawing = self._drawing.setdefault(run, threading.Lock())
        with drawing:
            charts = self._cached(run, key)
            if charts is None:
                charts = tuple(None if figure is None
                               else PlotData(type="plotly", plot=figure.to_json())
                               for figure in draw())
                with self._lock:
                    self._drawn[run] = (key, time.monotonic(), charts)
                    self._drawn.move_to_end(run)
                    while len(self._drawn) > self.size:
                        forgotten, _ = self._drawn.popitem(last=False)
                        self._drawing.pop(forgotten, None)
        return charts


CHARTS = DrawnCharts()


def chosen_checkpoint(chosen: str | None) -> str | None:
    """The checkpoint the dropdown names, or None for the final model."""
    return None if not chosen or chosen == FINAL_MODEL else chosen


@dataclass
class JobView:
    job_id: gr.Textbox
    checkpoint: gr.Dropdown
    title: gr.Markdown
    bar: gr.HTML
    pause: gr.Button
    resume: gr.Button
    cancel: gr.Button
    download_model: gr.Button
    download_logs: gr.Button
    export_model: gr.Button
    export_gguf: gr.Button
    gguf_quantization: gr.Dropdown
    delete: gr.Button
    share: gr.Button
    priority: gr.Number
    set_priority: gr.Button
    message: gr.Markdown
    download: gr.File
    loss_plot: gr.Plot
    optimizer_plot: gr.Plot
    throughput_plot: gr.Plot
    device_plot: gr.Plot
    rewards_plot: gr.Plot
    reward_accuracy_plot: gr.Plot
    analytics: gr.Markdown
    log_tail: gr.Textbox
    config: gr.Code
    checkpoints: gr.Dataframe
    drawn_key: gr.State  # which job, attempt and step this browser drew: redraw on change
    try_base: gr.Textbox
    try_tuned: gr.Textbox

    def refreshed(self) -> list:
        """What a refresh of the view may change."""
        return [self.title, self.bar, self.checkpoint, self.checkpoints, self.log_tail,
                self.config, *self.charts(), self.analytics, self.drawn_key,
                *self.buttons().values(), *self.job_owned()]

    def job_owned(self) -> list:
        """What belongs to the job shown and goes when another is selected."""
        return [self.message, self.download, self.checkpoint, self.try_base, self.try_tuned]

    def charts(self) -> list:
        return [self.loss_plot, self.optimizer_plot, self.throughput_plot, self.device_plot,
                self.rewards_plot, self.reward_accuracy_plot]

    def buttons(self) -> dict[str, gr.Button]:
        return {name: getattr(self, name) for name in (*ACTION_BUTTONS, "share")}


def create_jobs_tab(engine: Engine, live: LiveStreams, tab: gr.Tab, tick: gr.Timer) -> None:
    """`tick`: the console's timer (every TABLE_REFRESH_S), which refreshes the job table."""
    table = gr.Dataframe(job_table([]), label="Jobs (newest first) — select a row to open it",
                         interactive=False, wrap=False, max_height=320, elem_id="job-table")
    sweep_chooser = create_sweeps_view(engine)
    parts = _build_header_and_charts()
    try_it = _build_try_it()
    compare_ids, compare_plot = _build_compare()
    view = JobView(**parts, **_build_details(), try_base=try_it["base"],
                   try_tuned=try_it["tuned"])

    def refresh_table(request: gr.Request = None):
        user = user_of(engine, request)
        jobs = engine.views.list_jobs(user)
        choices = [(f"{j['name']} ({j['job_id']})", j["job_id"]) for j in jobs]
        return job_table(jobs), gr.update(choices=choices), sweep_choices(engine, user)

    def select_row(data: pd.DataFrame, event: gr.SelectData):
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return data.iloc[row]["job id"], ""

    tick.tick(refresh_table, None, [table, compare_ids, sweep_chooser], **PRIVATE)
    table.select(select_row, table, [view.job_id, view.drawn_key], **PRIVATE)
    # Each trigger starts a new stream at once ("multiple"), which ends the one it replaces.
    gr.on([tab.select, view.job_id.change], _job_stream(engine, view, live),
          [view.job_id, view.drawn_key, event_number()], view.refreshed(), js=numbered(2),
          trigger_mode="multiple", **PRIVATE)
    view.log_tail.change(None, None, None, js=FOLLOW_LOG_JS, api_visibility="private")
    _bind_compare(engine, compare_ids, compare_plot)
    _bind_try_it(engine, view, try_it)
    _bind_actions(engine, view)


def _bind_compare(engine: Engine, compare_ids: gr.Dropdown, compare_plot: gr.Plot) -> None:
    def do_compare(job_ids: list[str], request: gr.Request = None):
        user = user_of(engine, request)
        jobs = [engine.views.get_job(user, job_id) for job_id in job_ids or []]
        return compare_chart({j["job_id"]: (j["name"],
                                            engine.views.get_metrics(user, j["job_id"], 0))
                              for j in jobs},
                             {j["job_id"]: j["config"].get("method", "sft") for j in jobs})

    compare_ids.change(do_compare, compare_ids, compare_plot, **PRIVATE)


def _bind_try_it(engine: Engine, view: JobView, try_it: dict[str, Any]) -> None:
    """The prompt box: the base model's and the trained model's answers, side by side."""
    @as_gradio_errors
    def try_model(selected: str, chosen: str | None, text: str, user: User):
        return engine.artifacts.try_model(user, selected, text, chosen_checkpoint(chosen))

    def do_try_model(selected: str, chosen: str | None, text: str, request: gr.Request = None):
        try:
            result = try_model(selected, chosen, text, user_of(engine, request))
        except gr.Error as exc:  # in place of the answers, which would otherwise say "generating"
            return "", f"Could not generate: {as_text(exc.message, 400)}"
        return result["base"], result["tuned"]

    answers = [try_it["base"], try_it["tuned"]]
    try_it["try_model"].click(lambda: ("generating…", "generating…"), None, answers,
                              queue=False, **PRIVATE).then(
        do_try_model, [view.job_id, view.checkpoint, try_it["prompt"]], answers, **PRIVATE)


def _job_stream(engine: Engine, view: JobView, live: LiveStreams):
    async def follow_job(selected: str, drawn: str, order: float | None = None,
                         request: gr.Request = None):
        """The job view as one stream: drawn now, then again whenever the engine says the job
        changed (a metrics record, its log, heartbeat or status), never on a timer."""
        user = user_of(engine, request)
        job_id = (selected or "").strip()
        stream = live.begin(session_of(request), "job", user.name, order)
        state = {"drawn": drawn, "status": None, "sent": {}}

        def status() -> str | None:
            try:
                return engine.store.get(job_id).status if job_id else None
            except (KeyError, ValueError):
                return None

        def render() -> dict:
            now = status()
            update = job_view(engine, view, selected, state["drawn"], user)
            if state["status"] not in (None, now):
                # An action's message ("Pause requested") is stale once the status has moved on.
                update.setdefault(view.message, "")
            state["drawn"] = update.get(view.drawn_key, state["drawn"])
            state["status"] = now
            return unsent(update, state["sent"])

        def heartbeat_s() -> float:
            # Elapsed time and ETA move on while a job is queued or running.
            return ACTIVE_HEARTBEAT_S if status() in ACTIVE else IDLE_HEARTBEAT_S

        def ended() -> dict:
            return {view.message: ENDED_FOR_OTHERS}

        async for update in live.follow(stream, lambda: [job_key(job_id)] if job_id else [],
                                        render, heartbeat_s, ended):
            yield update

    return follow_job


def unsent(update: dict, sent: dict) -> dict:
    """What of `update` this tab does not show already (`sent` remembers what it was sent):
    most of a job view is unchanged from one step to the next, and each value sent is encoded
    and pushed again."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
            return isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame) and a.equals(b)
        try:
            return bool(a == b)
        except (TypeError, ValueError):
            return False

    new = {component: value for component, value in update.items()
           if component not in sent or not same(sent[component], value)}
    sent.update(new)
    return new


def _build_header_and_charts() -> dict[str, Any]:
    parts: dict[str, Any] = {}
    with gr.Row():
        parts["job_id"] = gr.Textbox(label="Job id", placeholder="select a row above", scale=3,
                                     elem_id="selected-job")
        parts["checkpoint"] = gr.Dropdown([FINAL_MODEL], value=FINAL_MODEL, scale=2,
                                          label="Checkpoint (for resume, download, export and "
                                                "Try it)", elem_id="checkpoint-choice")
    parts["title"] = gr.Markdown("No job selected.", elem_id="job-header")
    parts["bar"] = gr.HTML("", elem_id="job-progress")
    with gr.Row():
        for name, label, extra in (("pause", "Pause", {}), ("resume", "Resume", {}),
                                   ("cancel", "Cancel", {"variant": "stop"}),
                                   ("download_model", "Download model", {}),
                                   ("download_logs", "Download logs", {}),
                                   ("export_model", "Export model", {}),
                                   ("export_gguf", "Export GGUF", {}),
                                   ("delete", "Delete", {}), ("share", "Share", {})):
            parts[name] = gr.Button(label, interactive=False, elem_id=f"{name}-button", **extra)
    with gr.Row():
        parts["priority"] = gr.Number(0, precision=0, label="Priority (higher starts first)")
        parts["set_priority"] = gr.Button("Set priority", elem_id="set-priority-button")
        parts["gguf_quantization"] = gr.Dropdown(
            list(GGUF_QUANTIZATIONS), value="q8_0", label="GGUF quantization",
            info="q8_0: 8 bits a weight, near-lossless; f16/bf16: half size of f32; f32: exact",
            elem_id="gguf-quantization")
    parts["message"] = gr.Markdown(elem_id="job-message")
    parts["download"] = gr.File(label="Download", visible=False, interactive=False,
                                elem_id="job-download")
    charts = ((("loss_plot", "Loss", "loss-chart"),
               ("optimizer_plot", "Learning rate / grad norm", None)),
              (("throughput_plot", "Throughput", None), ("device_plot", "Device", None)),
              (("rewards_plot", "Rewards or scores", "rewards-chart"),
               ("reward_accuracy_plot", "Reward accuracy", "reward-accuracy-chart")))
    for row in charts:
        with gr.Row():
            for name, label, elem_id in row:
                # The method's own charts show only where it logs them (charts.method_charts).
                parts[name] = gr.Plot(label=label, elem_id=elem_id,
                                      visible=not name.startswith("reward"))
    parts["analytics"] = gr.Markdown()
    return parts


def _build_try_it() -> dict[str, Any]:
    with gr.Accordion("Try it: the trained model next to its base model", open=False):
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", placeholder="What is the capital of Peru?", scale=4)
            try_model = gr.Button("Try it", scale=1, elem_id="try_model-button")
        gr.Markdown("Uses the checkpoint chosen above, or the final model; greedy decoding, "
                    "framed with the model's chat template. Runs in its own process.")
        with gr.Row():
            base = gr.Textbox(label="Base model", lines=4, interactive=False, elem_id="try-base")
            tuned = gr.Textbox(label="Trained", lines=4, interactive=False, elem_id="try-tuned")
    return {"prompt": prompt, "try_model": try_model, "base": base, "tuned": tuned}


def _build_compare():
    with gr.Accordion("Compare runs", open=False):
        compare_ids = gr.Dropdown([], multiselect=True, label="Jobs to overlay (loss, smoothed)")
        compare_plot = gr.Plot(label="Loss of several runs", elem_id="compare-chart")
    return compare_ids, compare_plot


def _build_details() -> dict[str, Any]:
    parts: dict[str, Any] = {}
    parts["log_tail"] = gr.Textbox(label="Training log (last lines)", lines=12, max_lines=12,
                                   autoscroll=True, interactive=False, elem_id="log-tail")
    with gr.Accordion("Config and command", open=False):
        parts["config"] = gr.Code(language="yaml", lines=20, interactive=False)
    parts["checkpoints"] = gr.Dataframe(None, headers=["name", "step", "size MB", "loss"],
                                        label="Checkpoints", interactive=False, max_height=200)
    parts["drawn_key"] = gr.State("")
    return parts


def _bind_actions(engine: Engine, view: JobView) -> None:
    """The buttons: each handler acts through the engine and says what it did."""

    @as_gradio_errors
    def do_pause(selected: str, request: gr.Request = None):
        job = engine.jobs.pause(user_of(engine, request), selected)
        return f"Pause requested for `{job['job_id']}`: it stops after its current step."

    @as_gradio_errors
    def do_resume(selected: str, chosen: str | None, request: gr.Request = None):
        job = engine.jobs.resume(user_of(engine, request), selected, chosen_checkpoint(chosen))
        return f"Job `{job['job_id']}` is queued again."

    @as_gradio_errors
    def do_cancel(selected: str, request: gr.Request = None):
        job = engine.jobs.cancel(user_of(engine, request), selected)
        return f"Cancel requested for `{job['job_id']}`."

    @as_gradio_errors
    def do_delete(selected: str, request: gr.Request = None):
        job = engine.jobs.delete(user_of(engine, request), selected)
        return f"Job `{job['job_id']}` deleted with its folder."

    for button, fn, inputs, outputs in (
            (view.pause, do_pause, [view.job_id], [view.message]),
            (view.resume, do_resume, [view.job_id, view.checkpoint], [view.message]),
            (view.cancel, do_cancel, [view.job_id], [view.message]),
            (view.delete, do_delete, [view.job_id], [view.message])):
        button.click(fn, inputs, outputs, **PRIVATE)
    _bind_sharing_and_priority(engine, view)
    _bind_downloads(engine, view)


def _bind_sharing_and_priority(engine: Engine, view: JobView) -> None:
    @as_gradio_errors
    def do_share(selected: str, request: gr.Request = None):
        user = user_of(engine, request)
        shared = not engine.views.get_job(user, selected).get("shared")
        job = engine.jobs.share(user, selected, shared)
        return (f"Job `{job['job_id']}` is shared: everyone may try, download and train on its "
                f"model." if shared else f"Job `{job['job_id']}` is no longer shared.")

    @as_gradio_errors
    def do_set_priority(selected: str, priority: float, request: gr.Request = None):
        job = engine.jobs.set_priority(user_of(engine, request), selected, int(priority or 0))
        where = f"; queue position {job['position']}" if job.get("position") else ""
        return f"Priority of `{job['job_id']}` set to {job['priority']}{where}."
    view.share.click(do_share, [view.job_id], [view.message], **PRIVATE)
    view.set_priority.click(do_set_priority, [view.job_id, view.priority], [view.message],
                            **PRIVATE)


def _bind_downloads(engine: Engine, view: JobView) -> None:
    """Downloads and export take seconds to minutes: the message says at once what is being
    prepared and the previous file goes, so an old result is never taken for the new one."""
    def download(method: str, with_checkpoint: bool, what: str, *options: str):
        @as_gradio_errors
        def fetch(selected: str, chosen: str | None, user: User) -> Path:
            args = (selected, chosen_checkpoint(chosen)) if with_checkpoint else (selected,)
            return Path(getattr(engine.artifacts, method)(user, *args, *options))

        def handler(selected: str, chosen: str | None = None, request: gr.Request = None):
            try:
                path = fetch(selected, chosen, user_of(engine, request))
            except gr.Error as exc:  # said where the "Preparing" message was, not only in a toast
                return gr.update(value=None, visible=False), f"Could not prepare {what}: " \
                    f"{as_text(exc.message, 400)}"
            return gr.update(value=str(path), visible=True), f"Ready: `{path.name}`."
        return handler

    def preparing(what: str):
        def announce(chosen: str | None = None):
            source = f" ({chosen})" if chosen else ""
            return gr.update(value=None, visible=False), f"Preparing {what}{source}…"
        return announce

    def gguf_for_view(selected: str, chosen: str | None, quantization: str,
                    request: gr.Request = None):
        handler = download("export_gguf", True, "the GGUF file", quantization)
        return handler(selected, chosen, request)

    view.export_gguf.click(preparing("the GGUF file (this can take minutes)"), view.checkpoint,
                           [view.download, view.message], queue=False, **PRIVATE).then(
        gguf_for_view, [view.job_id, view.checkpoint, view.gguf_quantization],
        [view.download, view.message], **PRIVATE)
    for button, method, with_checkpoint, what in (
            (view.download_model, "download_model", True, "the model zip"),
            (view.export_model, "export_model", True, "the merged model (this can take minutes)"),
            (view.download_logs, "download_logs", False, "the logs zip")):
        inputs = [view.job_id, view.checkpoint] if with_checkpoint else [view.job_id]
        outputs = [view.download, view.message]
        button.click(preparing(what), [view.checkpoint] if with_checkpoint else None, outputs,
                     queue=False, **PRIVATE).then(
            download(method, with_checkpoint, what), inputs, outputs, **PRIVATE)


def job_view(engine: Engine, view: JobView, selected: str, drawn: str, user: User) -> dict:
    """Everything the job view shows, for the job selected; charts only when a step is new."""
    buttons = {button: gr.update(interactive=False) for button in view.buttons().values()}
    empty = {view.title: "No job selected.", view.bar: "", view.log_tail: "", view.config: "",
             view.drawn_key: "", **buttons}
    if not selected or not selected.strip():
        return empty
    try:
        job = engine.views.get_job(user, selected.strip())
    except (KeyError, ValueError):
        return {**empty, view.title: f"No job with id {as_text(selected, 80)}."}
    analytics = engine.views.job_analytics(user, job["job_id"])
    last_step = (job["last_metrics"] or {}).get("step", 0)
    shown = {}
    # Charts are sent again only when the job, its attempt or its newest step changed.
    current = f"{job['job_id']}@{job.get('attempt', 1)}@{last_step}"
    switched = drawn.split("@")[0] != job["job_id"]
    if current != drawn or not last_step:
        figures = CHARTS.get(current, lambda: job_charts(
            engine.views.get_metrics(user, job["job_id"], 0), run_events(job)))
        shown = {chart: gr.update(value=figure, visible=figure is not None)
                 if chart in (view.rewards_plot, view.reward_accuracy_plot) else figure
                 for chart, figure in zip(view.charts(), figures, strict=True)}
    enabled = enabled_actions(job, user)
    buttons = {button: gr.update(interactive=name in enabled) for name, button in
               view.buttons().items()}
    buttons[view.share] = gr.update(interactive="share" in enabled,
                                    value="Unshare" if job.get("shared") else "Share")
    checkpoints = [FINAL_MODEL, *(c["name"] for c in job["checkpoints"])]
    # The response that first shows a job also clears what belonged to the one shown before
    # (its message, download, checkpoint choice, Try-it answers): one response, so nothing the
    # person chose for the new job can be overwritten by a late reset.
    owned = {view.message: "", view.download: gr.update(value=None, visible=False),
             view.checkpoint: gr.update(choices=checkpoints, value=FINAL_MODEL),
             view.try_base: "", view.try_tuned: ""} if switched else {}
    return {view.title: header(job, user), view.bar: progress_bar(job, analytics),
            view.checkpoint: gr.update(choices=checkpoints), **owned,
            view.checkpoints: checkpoints_frame(job["checkpoints"]),
            view.log_tail: engine.views.log_tail(user, job["job_id"]),
            view.config: config_text(job), view.analytics: analytics_text(analytics),
            view.drawn_key: current, **shown, **buttons}
