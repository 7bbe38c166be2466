"""Plotly figures for a job's metrics and the machine's telemetry.

Series are downsampled on the server to at most MAX_POINTS, so a chart's payload stays bounded
however long the run.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import plotly.graph_objects as go

MAX_POINTS = 2000
SMOOTHING = 0.9  # exponential moving average weight, as in TensorBoard's smoothing slider


def downsample(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """Every k-th point, always keeping the last one (the newest step must be visible)."""
    if len(xs) <= limit:
        return xs, ys
    stride = math.ceil(len(xs) / (limit - 1))
    keep = list(range(0, len(xs) - 1, stride)) + [len(xs) - 1]
    return [xs[i] for i in keep], [ys[i] for i in keep]


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
    figure = go.Figure()
    figure.update_layout(title=title, height=280, margin=dict(l=50, r=20, t=40, b=40),
                         xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                         legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
                         uirevision="keep")  # keep the user's zoom across refreshes
    return figure


def _add(figure: go.Figure, xs: list, ys: list, name: str, **style) -> None:
    xs, ys = downsample(xs, ys)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, **style))


def _add_right(figure: go.Figure, xs: list, ys: list, name: str, axis_title: str) -> None:
    """A series on a second y axis, on the right: two units in one chart."""
    _add(figure, xs, ys, name, yaxis="y2")
    figure.update_layout(yaxis2=dict(title=axis_title, overlaying="y", side="right"))


def loss_chart(records: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Loss", "step", "loss")
    xs, ys = series(records, "loss")
    _add(figure, xs, ys, "raw", line=dict(color="rgba(31,119,180,0.35)"))
    _add(figure, xs, smooth(ys), "smoothed", line=dict(color="rgb(31,119,180)", width=2))
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
    if any("gpu_mem_allocated_mb" in r for r in records):
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
    for job_id, (name, records) in runs.items():
        xs, ys = series(records, "loss")
        _add(figure, xs, smooth(ys), f"{name} ({job_id[-4:]})")
    return figure


def job_charts(records: list[dict[str, Any]]) -> tuple[go.Figure, ...]:
    return (loss_chart(records), optimizer_chart(records), throughput_chart(records),
            device_chart(records))
