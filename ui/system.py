"""The System tab: per-GPU telemetry through NVML, CPU/RAM/disk, and the queue."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from engine.console.engine import Engine
from ui.api import user_of
from ui.charts import system_chart
from ui.live import LiveStreams, event_number, numbered, session_of


def machine_text(stats: dict[str, Any], device: str) -> str:
    lines = [
        f"**Device:** {device}",
        f"**CPU:** {stats['cpu_percent']:.0f}% of {stats['cpu_count']} cores · load "
        + " / ".join(f"{v:.2f}" for v in stats["load_average"]),
        f"**RAM:** {stats['memory_used_mb'] / 1024:.1f} / {stats['memory_total_mb'] / 1024:.1f} GB "
        f"({stats['memory_percent']:.0f}%)",
        f"**Disk (workspace):** {stats['disk_used_gb']:.0f} / {stats['disk_total_gb']:.0f} GB "
        f"({stats['disk_percent']:.0f}%)",
        "**Queue:** " + (", ".join(f"{k} {v}" for k, v in stats["queue"].items() if v) or "empty"),
    ]
    if stats.get("gpu_note"):
        lines.append(f"**GPUs:** none — {stats['gpu_note']}")
    return "\n\n".join(lines)


def gpu_table(stats: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for gpu in stats["gpus"]:
        if "error" in gpu:
            rows.append({"GPU": gpu["index"], "name": f"error: {gpu['error']}"})
            continue
        used_gb, total_gb = gpu["memory_used_mb"] / 1024, gpu["memory_total_mb"] / 1024
        rows.append({"GPU": gpu["index"], "name": gpu["name"],
                     "util %": gpu["utilization_percent"],
                     "memory": f"{used_gb:.1f} / {total_gb:.1f} GB",
                     "temp °C": gpu["temperature_c"],
                     "power W": round(gpu["power_w"], 1) if gpu.get("power_w") else None})
    return pd.DataFrame(rows, columns=["GPU", "name", "util %", "memory", "temp °C", "power W"])


def create_system_tab(engine: Engine, live: LiveStreams, tab: gr.Tab) -> None:
    summary = gr.Markdown(elem_id="system-summary")
    gpus = gr.Dataframe(label="GPUs (NVML)", interactive=False, visible=False)
    chart = gr.Plot(label="Machine over time")

    def refresh():
        stats = engine.system_stats()
        # No table of nothing on a machine without GPUs: the summary says why there are none.
        return (machine_text(stats, engine.machine.describe()),
                gr.update(value=gpu_table(stats), visible=bool(stats["gpus"])),
                system_chart(list(engine.system.samples)))

    async def follow(order: float | None = None, request: gr.Request = None):
        """While the tab is shown: a new telemetry sample each interval, as one stream."""
        stream = live.begin(session_of(request), "system",
                            user_of(engine, request).name, order)
        async for update in live.follow(stream, lambda: [], refresh,
                                        lambda: engine.system.interval_s):
            yield update

    tab.select(follow, event_number(), [summary, gpus, chart], js=numbered(0),
               api_visibility="private", concurrency_limit=None, show_progress="hidden",
               trigger_mode="multiple")
