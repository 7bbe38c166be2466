"""Plotly figures for a job's metrics and the machine's telemetry.

Series are downsampled on the server to at most MAX_POINTS, so a chart's payload stays bounded
however long the run.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

MAX_POINTS = 2000
GRID = "#EBF0F8"
COLORS = ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"]
SMOOTHING = 0.9  # exponential moving average weight, as in TensorBoard's smoothing slider


def downsample(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Every k-th point, always keeping the last one (the newest step must be visible)."""
    if len(xs) <= limit:
        return xs, ys
    stride = math.ceil(len(xs) / (limit - 1))
    keep = list(range(0, len(xs) - 1, stride)) + [len(xs) - 1]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def sample_records(records: list[dict[str, Any]], limit: int = MAX_POINTS) -> tuple[list, int]:
    """At most `limit` records, evenly spaced, the last always kept, and the stride used. Charts
    draw from the sample, so a refresh of a 100,000-step run touches 2,000 records, not all."""
    if len(records) <= limit:
        return records, 1
    stride = math.ceil(len(records) / (limit - 1))
    return records[:-1:stride] + [records[-1]], stride


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: the first points are not dragged towards zero."""
    out, average = [], 0.0
    for n, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** n))
    return out


def series(records: list[dict[str, Any]], key: str, x: str = "step") -> tuple[list, list]:
    points = [(r[x], r[key]) for r in records if isinstance(r.get(key), (int, float))
              and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    # The look of plotly's "plotly_white" set directly: a named template is copied into every
    # figure and sent with every refresh (two thirds of a chart's bytes).
    axis = dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True)
    figure = go.Figure()
    figure.update_layout(title=title, height=280, margin=dict(l=50, r=20, t=40, b=40),
                         xaxis=dict(title=x_title, **axis), yaxis=dict(title=y_title, **axis),
                         template="none", paper_bgcolor="white", plot_bgcolor="white",
                         font=dict(color="#2a3f5f"), colorway=COLORS,
                         legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
                         uirevision="keep")  # keep the user's zoom across refreshes
    return figure


def _add(figure: go.Figure, xs: list, ys: list, name: str, **style) -> None:
    xs, ys = downsample(xs, ys)
    if ys and all(isinstance(v, (int, float)) for v in ys) and xs and isinstance(xs[0], (int, float)):
        # Plotly checks lists element by element but numeric arrays in one go, and sends them
        # packed (base64): steps as int32, values as float32, plenty for a chart.
        integral = all(isinstance(x, int) for x in xs)
        xs = np.asarray(xs, dtype=np.int32 if integral else np.float64)
        ys = np.asarray(ys, dtype=np.float32)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, **style))


def _add_right(figure: go.Figure, xs: list, ys: list, name: str, axis_title: str) -> None:
    """A series on a second y axis, on the right: two units in one chart."""
    _add(figure, xs, ys, name, yaxis="y2")
    figure.update_layout(yaxis2=dict(title=axis_title, overlaying="y", side="right"))


def loss_chart(records: list[dict[str, Any]], stride: int = 1) -> go.Figure:
    """`stride`: records were sampled every `stride` steps; the smoothing weight is raised to that
    power so the smoothed curve spans the same number of steps as on the full run."""
    figure = _figure("Loss", "step", "loss")
    xs, ys = series(records, "loss")
    _add(figure, xs, ys, "raw", line=dict(color="rgba(31,119,180,0.35)"))
    _add(figure, xs, smooth(ys, SMOOTHING ** stride), "smoothed",
         line=dict(color="rgb(31,119,180)", width=2))
    return figure


def optimizer_chart(records: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Learning rate and gradient norm", "step", "learning rate")
    _add(figure, *series(records, "learning_rate"), "learning rate")
    _add_right(figure, *series(records, "grad_norm"), "grad norm", "grad norm")
    return figure


def throughput_chart(records: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Throughput", "step", "samples/s")
    _add(figure, *series(records, "samples_per_s"), "samples/s")
    _add_right(figure, *series(records, "tokens_per_s"), "tokens/s", "tokens/s")
    return figure


def device_chart(records: list[dict[str, Any]]) -> go.Figure:
    """GPU utilization/memory/temperature when the job ran on a GPU, else CPU and RSS."""
    if records and "gpu_mem_allocated_mb" in records[-1]:
        figure = _figure("GPU", "step", "% / °C")
        _add(figure, *series(records, "gpu_util_percent"), "utilization %")
        _add(figure, *series(records, "gpu_temp_c"), "temperature °C")
        _add_right(figure, *series(records, "gpu_mem_allocated_mb"), "memory MB", "MB")
    else:
        figure = _figure("CPU (no GPU)", "step", "CPU %")
        _add(figure, *series(records, "cpu_percent"), "trainer CPU %")
        _add_right(figure, *series(records, "rss_mb"), "memory MB", "MB")
    return figure


def system_chart(samples: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Machine", "time", "%")
    stamps = [dt.datetime.fromtimestamp(s["time"]) for s in samples]
    _add(figure, stamps, [s["cpu_percent"] for s in samples], "CPU %")
    _add(figure, stamps, [s["memory_percent"] for s in samples], "RAM %")
    indices = sorted({g["index"] for s in samples for g in s["gpus"] if "error" not in g})
    for index in indices:
        util = [next((g.get("utilization_percent") for g in s["gpus"] if g["index"] == index), None)
                for s in samples]
        mem = [next((100 * g["memory_used_mb"] / g["memory_total_mb"] for g in s["gpus"]
                     if g["index"] == index and "error" not in g), None) for s in samples]
        _add(figure, stamps, util, f"GPU {index} util %")
        _add(figure, stamps, mem, f"GPU {index} memory %")
    return figure


def compare_chart(runs: dict[str, tuple[str, list[dict[str, Any]]]]) -> go.Figure:
    """Smoothed loss of several jobs on one chart: {job_id: (name, records)}."""
    figure = _figure("Loss, smoothed", "step", "loss")
    figure.update_layout(showlegend=True)  # the names matter even for one run
    for job_id, (name, records) in runs.items():
        shown, stride = sample_records(records)
        xs, ys = series(shown, "loss")
        # Plotly reads trace names as HTML-like markup: a name is shown as its letters only.
        label = html.escape(f"{name} ({job_id[-4:]})", quote=False)
        _add(figure, xs, smooth(ys, SMOOTHING ** stride), label)
    return figure


def job_charts(records: list[dict[str, Any]]) -> tuple[go.Figure, ...]:
    shown, stride = sample_records(records)
    return (loss_chart(shown, stride), optimizer_chart(shown), throughput_chart(shown),
            device_chart(shown))
