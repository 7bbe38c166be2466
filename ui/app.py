"""Assembles the console: a header, the New job / Jobs / System tabs and the API endpoints."""

from __future__ import annotations

import html

import gradio as gr

from engine.console.engine import Engine
from ui.api import register_api
from ui.jobs import PRIVATE, TABLE_REFRESH_S, create_jobs_tab
from ui.live import LiveStreams, event_number, numbered, session_of
from ui.new_job import create_new_job_tab
from ui.quiet_queue import quiet_queue
from ui.sweeps import create_sweep_form
from ui.system import create_system_tab

CSS = """
.td-progress { width: 100%; height: 14px; background: #e5e7eb; border-radius: 7px;
               overflow: hidden; }
.td-bar { height: 100%; background: linear-gradient(90deg, #2563eb, #3b82f6);
          transition: width .5s; }
.td-progress-text { font-size: .9em; color: #4b5563; margin-top: 4px; }
.td-status { font-weight: 600; padding: 1px 8px; border-radius: 8px; background: #e5e7eb; }
.td-running { background: #dbeafe; color: #1d4ed8; }
.td-completed { background: #dcfce7; color: #15803d; }
.td-failed { background: #fee2e2; color: #b91c1c; }
.td-paused { background: #fef9c3; color: #a16207; }
.td-cancelled { background: #f3f4f6; color: #4b5563; }
#disk-banner { background: #fee2e2; color: #991b1b; border: 1px solid #fca5a5;
               border-radius: 8px; padding: 4px 12px; }
.td-bad-field { outline: 2px solid #dc2626; outline-offset: 2px; border-radius: 6px; }
"""


def leave_other_tabs(live: LiveStreams, shown: str | None):
    def leave(order: float | None = None, request: gr.Request = None):
        for view in ("job", "system"):
            if view != shown:
                live.end(session_of(request), view, order)
    return leave


def disk_banner(engine: Engine) -> dict:
    """The banner over every tab while the workspace's disk is full or below its floor: what is
    wrong, what is held back, and that nothing can be recorded (hidden while all is well)."""
    message = engine.disk_status()["message"]
    return gr.update(value=f"<b>Disk:</b> {html.escape(message, quote=False)}" if message else "",
                     visible=bool(message))


def build_console(engine: Engine) -> gr.Blocks:
    health = engine.health()
    with gr.Blocks(title="TrainDeck") as console:
        gr.Markdown(f"# TrainDeck\nFine-tuning console · {health['device']} · "
                    f"v{health['version']} · workspace `{engine.workspace.root}`")
        banner = gr.HTML(visible=False, elem_id="disk-banner")
        # One tick for every tab: the disk banner, and the job table.
        tick = gr.Timer(TABLE_REFRESH_S)
        live = LiveStreams(engine.changes)
        # The contract's endpoints first: they keep their names, and a UI handler that happens to
        # share one is the one Gradio renames.
        register_api(engine)
        with gr.Tabs():
            with gr.Tab("New job", id="new") as new_tab:
                create_sweep_form(engine, *create_new_job_tab(engine))
            with gr.Tab("Jobs", id="jobs") as jobs_tab:
                create_jobs_tab(engine, live, jobs_tab, tick)
            with gr.Tab("System", id="system") as system_tab:
                create_system_tab(engine, live, system_tab)
        for trigger in (console.load, tick.tick):  # at once, then on the tick
            trigger(lambda: disk_banner(engine), None, banner, **PRIVATE)
        # A live view streams only while its tab is shown.
        order = event_number()
        for tab, shown in ((new_tab, None), (jobs_tab, "job"), (system_tab, "system")):
            tab.select(leave_other_tabs(live, shown), order, None, js=numbered(0),
                       api_visibility="private", queue=False)
    console.queue(default_concurrency_limit=None)  # polling clients must never wait on each other
    quiet_queue(console)  # an idle console takes no CPU from the trainers
    return console
