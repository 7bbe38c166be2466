"""Analytics and charts stay correct and bounded however long the run (no training needed)."""

import json
import math
import random
import statistics

from engine.console.metrics.analytics import RunningStats, analyze, steady_state
from engine.console.metrics.log import MetricsLog
from ui.charts import MAX_POINTS, job_charts


def records(count, start_step=1, seed=0):
    rng = random.Random(seed)
    return [{"step": s, "time": 1000.0 + s * 0.1,
             "loss": 3 * math.exp(-s / 500) + rng.random() * 0.1,
             "samples_per_s": 100 + rng.random() * 10, "tokens_per_s": 9000 + rng.random() * 100,
             "rss_mb": 500 + s % 7, "learning_rate": 1e-4, "grad_norm": 1.0}
            for s in range(start_step, start_step + count)]


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def test_running_stats_agree_with_a_direct_computation():
    run = records(1234)
    result = analyze(run, {"step": 1234, "total_steps": 2000}, "running", 1000.0, None, now=1200.0,
                     stats=RunningStats(run))
    steady = steady_state(run)
    assert close(result["samples_per_s"], statistics.fmean(r["samples_per_s"] for r in steady))
    assert close(result["tokens_per_s"], statistics.fmean(r["tokens_per_s"] for r in steady))
    best = min(run, key=lambda r: r["loss"])
    assert (result["best_loss"], result["best_step"]) == (best["loss"], best["step"])
    assert result["first_loss"] == run[0]["loss"] and result["last_loss"] == run[-1]["loss"]
    assert result["loss_trend"] == "falling" and result["peak_rss_mb"] == 506
    assert close(result["steps_per_s"], 10.0) and close(result["eta_s"], (2000 - 1234) / 10.0)


def test_metrics_log_keeps_stats_through_a_resume_that_repeats_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first, repeated = records(50), records(30, start_step=31, seed=1)  # steps 31-50 again
    path.write_text("".join(json.dumps(r) + "\n" for r in first + repeated))
    log = MetricsLog(path)
    log.refresh()
    expected = first[:30] + repeated
    assert [r["step"] for r in log.records] == list(range(1, 61))
    direct = RunningStats(expected)
    assert log.stats.best_loss == direct.best_loss and log.stats.losses == 60
    assert log.stats.mean("samples_per_s", 5, 60) == direct.mean("samples_per_s", 5, 60)


def test_charts_of_a_long_run_are_bounded():
    figures = [f for f in job_charts(records(100_000)) if f is not None]
    for figure in figures:
        for trace in (t for t in figure.data if t.x is not None and len(t.x)):
            assert len(trace.x) <= MAX_POINTS
            assert trace.x[-1] == 100_000  # the newest step is always drawn
    assert sum(len(f.to_json()) for f in figures) < 400_000


def test_an_evaluation_joins_the_record_of_the_step_it_evaluated(tmp_path):
    path = tmp_path / "metrics.jsonl"
    run = records(12)
    lines = []
    for record in run:
        lines.append(record)
        if record["step"] % 4 == 0:  # the trainer appends an evaluation after its step's record
            lines.append({"step": record["step"], "time": record["time"] + 0.05,
                          "eval_loss": 5.0 - record["step"] / 10})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    log = MetricsLog(path)
    log.refresh()
    assert [r["step"] for r in log.records] == list(range(1, 13))
    assert log.at(8)["eval_loss"] == 4.2 and log.at(8)["loss"] == run[7]["loss"]
    assert log.at(8)["time"] == run[7]["time"]  # the step's time, for the rates
    assert log.stats.evaluations == 3
    assert (log.stats.best_eval_loss, log.stats.best_eval_step) == (3.8, 12)
    assert RunningStats(log.records).best_eval_step == 12  # rebuilt after a resume: the same
    loss_chart = job_charts(log.records)[0]
    evaluated = [t for t in loss_chart.data if t.name == "eval loss"]
    assert len(evaluated) == 1 and list(evaluated[0].x) == [4, 8, 12]
