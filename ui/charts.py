"""Plotly figures for a job's metrics and the machine's telemetry.

Series are downsampled on the server to at most MAX_POINTS, so a chart's payload stays bounded
however long the run.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from engine.jobfiles import checkpoint_step

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
    # The legend sits under the x axis, never on the lines; margins grow to fit axis titles.
    figure.update_layout(title=title, height=300, margin=dict(l=50, r=20, t=40, b=20),
                         xaxis=dict(title=x_title, **axis), yaxis=dict(title=y_title, **axis),
                         template="none", paper_bgcolor="white", plot_bgcolor="white",
                         font=dict(color="#2a3f5f"), colorway=COLORS,
                         legend=dict(orientation="h", x=0, xanchor="left", y=-0.32,
                                     yanchor="top"),
                         uirevision="keep")  # keep the user's zoom across refreshes
    return figure


@functools.lru_cache(maxsize=16)
def waiting_figure(title: str) -> go.Figure:
    """A chart before its first point: says so, instead of empty axes from -1 to 6. The same
    for every job, so drawn once (callers only read it)."""
    figure = _figure(title, "", "")
    figure.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False),
                         annotations=[dict(text="waiting for the first step", showarrow=False,
                                           xref="paper", yref="paper", x=0.5, y=0.5,
                                           font=dict(size=14, color="#8a94a6"))])
    return figure


def _add(figure: go.Figure, xs: list, ys: list, name: str, **style) -> None:
    xs, ys = downsample(xs, ys)
    numeric = all(isinstance(v, (int, float)) for v in ys)
    if ys and numeric and xs and isinstance(xs[0], (int, float)):
        # Plotly checks lists element by element but numeric arrays in one go, and sends them
        # packed (base64): steps as int32, values as float32, plenty for a chart.
        integral = all(isinstance(x, int) for x in xs)
        xs = np.asarray(xs, dtype=np.int32 if integral else np.float64)
        ys = np.asarray(ys, dtype=np.float32)
    figure.add_trace(go.Scatter(x=xs, y=ys, name=name, **{"mode": "lines", **style}))


def _add_right(figure: go.Figure, xs: list, ys: list, name: str, axis_title: str) -> None:
    """A series on a second y axis, on the right: two units in one chart."""
    _add(figure, xs, ys, name, yaxis="y2")
    figure.update_layout(yaxis2=dict(title=dict(text=axis_title, standoff=8), overlaying="y",
                                     side="right", automargin=True, showgrid=False))


def _raw_and_smoothed(figure: go.Figure, xs: list, ys: list, name: str, stride: int,
                      rgb: str = "31,119,180", **style) -> None:
    """The raw series faint, its smoothed curve strong: one reading, not two noisy lines."""
    _add(figure, xs, ys, f"{name} (raw)", line=dict(color=f"rgba({rgb},0.3)"), **style)
    _add(figure, xs, smooth(ys, SMOOTHING ** stride), name, line=dict(color=f"rgb({rgb})", width=2),
         **style)


def mark_events(figure: go.Figure, events: list[tuple[int, str]]) -> None:
    """Dashed vertical lines where the run was paused and resumed or its micro-batch changed."""
    for step, label in events:
        figure.add_vline(x=step, line=dict(color="#8a94a6", dash="dash", width=1),
                         annotation=dict(text=label, font=dict(size=10, color="#8a94a6")),
                         annotation_position="top left")


EVALUATED = dict(mode="lines+markers", line=dict(color="rgb(239,85,59)", width=2),
                 marker=dict(size=7))


def _add_evaluated(figure: go.Figure, evaluations: list[dict[str, Any]], key: str,
                   name: str) -> None:
    """Evaluations as points joined by a line, where the job evaluates (no empty legend entry
    where it does not)."""
    xs, ys = series(list(evaluations), key)
    if xs:
        _add(figure, xs, ys, name, **EVALUATED)


def loss_chart(records: list[dict[str, Any]], stride: int = 1,
               events: list[tuple[int, str]] = (),
               evaluations: list[dict[str, Any]] = ()) -> go.Figure:
    """`stride`: records were sampled every `stride` steps; the smoothing weight is raised to that
    power so the smoothed curve spans the same number of steps as on the full run.
    `evaluations`: the records with an evaluation loss, all of them, drawn beside it."""
    figure = _figure("Loss", "step", "loss")
    xs, ys = series(records, "loss")
    _raw_and_smoothed(figure, xs, ys, "loss", stride)
    _add_evaluated(figure, evaluations, "eval_loss", "eval loss")
    mark_events(figure, events)
    return figure


def optimizer_chart(records: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Learning rate and gradient norm", "step", "learning rate")
    _add(figure, *series(records, "learning_rate"), "learning rate")
    _add_right(figure, *series(records, "grad_norm"), "grad norm", "grad norm")
    return figure


def throughput_chart(records: list[dict[str, Any]], stride: int = 1) -> go.Figure:
    """Tokens/s when the run counts tokens, else samples/s: one is the other times a length."""
    key, unit = ("tokens_per_s", "tokens/s") if series(records, "tokens_per_s")[0] \
        else ("samples_per_s", "samples/s")
    figure = _figure("Throughput", "step", unit)
    _raw_and_smoothed(figure, *series(records, key), unit, stride, rgb="0,150,110")
    return figure


def rewards_chart(records: list[dict[str, Any]], stride: int = 1) -> go.Figure:
    """DPO and KTO: the implicit rewards of the chosen (desirable) and rejected (undesirable)
    answers and their margin."""
    figure = _figure("Rewards", "step", "reward")
    for key, name, rgb in (("rewards/chosen", "chosen", "0,150,110"),
                           ("rewards/rejected", "rejected", "239,85,59"),
                           ("rewards/margins", "margin", "99,110,250")):
        _raw_and_smoothed(figure, *series(records, key), name, stride, rgb=rgb)
    return figure


def scores_chart(records: list[dict[str, Any]], stride: int = 1) -> go.Figure:
    """A reward model: the mean, lowest and highest score it gave in the batch, and the mean
    margin of chosen over rejected."""
    figure = _figure("Scores", "step", "score")
    for key, name, rgb in (("mean_reward", "mean score", "0,150,110"),
                           ("min_reward", "lowest", "239,85,59"),
                           ("max_reward", "highest", "171,99,250"),
                           ("margin", "margin", "99,110,250")):
        _raw_and_smoothed(figure, *series(records, key), name, stride, rgb=rgb)
    return figure


def reward_accuracy_chart(records: list[dict[str, Any]], stride: int = 1,
                          evaluations: list[dict[str, Any]] = (),
                          key: str = "rewards/accuracies") -> go.Figure:
    """How often the chosen answer out-scores the rejected one (held-out pairs too): DPO's
    implicit rewards (`rewards/accuracies`), or a reward model's scores (`accuracy`)."""
    figure = _figure("Reward accuracy", "step", "accuracy")
    _raw_and_smoothed(figure, *series(records, key), "accuracy", stride)
    _add_evaluated(figure, evaluations, f"eval_{key}", "eval accuracy")
    figure.update_layout(yaxis=dict(range=[-0.02, 1.02]))
    return figure


def method_charts(records: list[dict[str, Any]], stride: int,
                  evaluations: list[dict[str, Any]]) -> tuple[go.Figure | None, go.Figure | None]:
    """The two charts of what the method logs beside its loss (None: hidden): rewards and
    accuracy for DPO, rewards for KTO (it logs no accuracy), scores and accuracy for a reward
    model, nothing for SFT."""
    latest = records[-5:]

    def logs(key: str) -> bool:
        return any(key in r for r in latest)
    if logs("rewards/chosen"):
        return (rewards_chart(records, stride),
                reward_accuracy_chart(records, stride, evaluations)
                if logs("rewards/accuracies") else None)
    if logs("mean_reward"):
        return (scores_chart(records, stride),
                reward_accuracy_chart(records, stride, evaluations, key="accuracy"))
    return None, None


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


# Telemetry is sampled only while someone looks (every 2 s): a longer gap is time nobody watched,
# drawn as a break rather than a line across it.
UNWATCHED_GAP_S = 10.0


def with_breaks(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = []
    for sample in samples:
        if shown and sample["time"] - shown[-1]["time"] > UNWATCHED_GAP_S:
            shown.append({"time": (sample["time"] + shown[-1]["time"]) / 2, "cpu_percent": None,
                          "memory_percent": None, "gpus": []})
        shown.append(sample)
    return shown


def system_chart(samples: list[dict[str, Any]]) -> go.Figure:
    figure = _figure("Machine", "time", "%")
    samples = with_breaks(samples)
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


AXIS_GAP = 0.08  # of the plot's width, between two loss axes on its right


def compare_chart(runs: dict[str, tuple[str, list[dict[str, Any]]]],
                  methods: dict[str, str] | None = None) -> go.Figure:
    """Smoothed loss of several jobs: {job_id: (name, records)}. Losses of different methods
    (SFT ~6, DPO ~0.69, KTO ~0.5) mean different things, so each method gets its own y axis."""
    methods = methods or {}
    order = list(dict.fromkeys(methods.get(job_id, "sft") for job_id in runs)) or ["sft"]
    figure = _figure("Loss, smoothed", "step", f"{order[0].upper()} loss")
    figure.update_layout(showlegend=True)  # the names matter even for one run
    # The second method's axis on the plot's right edge; each further one beside it, the plot
    # narrowed to make room.
    end = 1 - AXIS_GAP * max(0, len(order) - 2)
    figure.update_layout(xaxis=dict(domain=[0, end]))
    for index, method in enumerate(order[1:], start=2):
        axis = dict(title=dict(text=f"{method.upper()} loss", standoff=8), overlaying="y",
                    side="right", automargin=True, showgrid=False)
        if index > 2:
            axis.update(anchor="free", position=end + AXIS_GAP * (index - 2))
        figure.update_layout({f"yaxis{index}": axis})
    for job_id, (name, records) in runs.items():
        shown, stride = sample_records(records)
        xs, ys = series(shown, "loss")
        axis = order.index(methods.get(job_id, "sft")) + 1
        # Plotly reads trace names as HTML-like markup: a name is shown as its letters only.
        label = html.escape(f"{name} ({job_id[-4:]})", quote=False)
        _add(figure, xs, smooth(ys, SMOOTHING ** stride), label,
             yaxis="y" if axis == 1 else f"y{axis}")
    return figure


def job_charts(records: list[dict[str, Any]],
               events: list[tuple[int, str]] = ()) -> tuple[go.Figure, ...]:
    """Loss, optimizer, throughput, device; then the method's two (`method_charts`), None where
    it has none (those charts are hidden)."""
    if not records:
        return (*(waiting_figure(t) for t in ("Loss", "Learning rate and gradient norm",
                                               "Throughput", "Device")), None, None)
    shown, stride = sample_records(records)
    evaluations = [r for r in records if "eval_loss" in r]  # few: every one is drawn
    return (loss_chart(shown, stride, events, evaluations), optimizer_chart(shown),
            throughput_chart(shown, stride), device_chart(shown),
            *method_charts(shown, stride, evaluations))


def run_events(job: dict[str, Any]) -> list[tuple[int, str]]:
    """Steps where an attempt resumed from a checkpoint, or the micro-batch was lowered."""
    events = []
    for attempt in job.get("attempts", [])[1:]:
        step = checkpoint_step(attempt.get("resume_from"))
        if step is not None:
            events.append((step, "resumed"))
    for change in job.get("microbatch_changes") or []:
        if isinstance(change.get("at_step"), int):
            to = change.get("to", {}).get("per_device_train_batch_size")
            events.append((change["at_step"], f"micro-batch {to}"))
    return events
