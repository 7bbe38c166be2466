"""What the console shows, computed without a browser: the job table, a job's header, which
buttons are enabled, the form's sections and which fields it shows for a method and adapter."""

import pytest

from engine.config import SCHEMA, ConfigError, JobConfig
from engine.console.jobs.checkpoints import mark_best
from engine.console.jobs.views import run_seconds
from engine.console.people.users import User
from engine.console.records.job import Job, JobStatus
from engine.schema import Problem
from ui.charts import compare_chart, job_charts, run_events, system_chart
from ui.job_format import (
    checkpoints_frame,
    enabled_actions,
    format_duration,
    header,
    job_table,
    progress_bar,
)
from ui.new_job import (
    ADVANCED_FIELDS,
    COMMON_FIELDS,
    FIELD_NAMES,
    SOURCE_FIELDS,
    bad_fields,
    field_marks,
    visibility,
)
from ui.safe_text import as_text

BOB, CAROL, ALICE = User("bob", "user"), User("carol", "user"), User("alice", "admin")


def job(status="running", **extra):
    return {"job_id": "20261130-101010-abcd", "name": "run", "owner": "bob", "status": status,
            "priority": 0, "attempt": 1, "method": "sft", "adapter": "lora",
            "model": "/models/tiny", "progress": {"step": 5, "total_steps": 20}, "loss": 1.23456,
            "started_at": 1000.0, "finished_at": None, "requested": None,
            "config": {"adapter": "lora"}, "checkpoints": [], **extra}


def test_the_table_shows_one_row_per_job_with_readable_cells():
    table = job_table([job(run_s=95.0), job("queued", job_id="b", position=2, started_at=None,
                                            run_s=None)])
    assert list(table["job id"]) == ["20261130-101010-abcd", "b"]
    first = table.iloc[0]
    assert first["progress"] == "5/20 (25%)" and first["loss"] == "1.2346"
    assert first["model"] == "tiny" and first["duration"] == "1m35s" and first["queue"] == ""
    assert table.iloc[1]["queue"] == 2 and table.iloc[1]["duration"] == ""
    assert format_duration(3 * 3600 + 125) == "3h02m"


def test_a_resumed_job_shows_this_attempt_and_its_total_run_time():
    attempts = [{"started_at": 1000.0, "finished_at": 1600.0}, {"started_at": 2000.0}]
    stored = Job(job_id="j", name="j", config=JobConfig(), status=JobStatus.RUNNING, attempt=2,
                 attempts=attempts)
    assert run_seconds(stored, now=2030.0) == 630.0  # 10 min before the pause, 30 s since
    assert run_seconds(Job(job_id="q", name="q", config=JobConfig())) is None  # never ran
    # An attempt whose console died has no end: it does not count as running until now.
    interrupted = [{"started_at": 500.0}, *attempts]
    assert run_seconds(Job(job_id="j", name="j", config=JobConfig(), status=JobStatus.RUNNING,
                           attempt=3, attempts=interrupted), now=2030.0) == 630.0
    bar = progress_bar(job(attempt=2, run_s=630.0), {"elapsed_s": 30.0})
    assert "elapsed 30s this attempt" in bar and "10m30s over 2 attempts" in bar


@pytest.mark.parametrize("status,requested,expected", [
    ("queued", None, {"pause", "cancel", "share"}),
    ("running", None, {"pause", "cancel", "share", "download_logs"}),
    ("running", "pause", {"cancel", "share", "download_logs"}),
    ("running", "cancel", {"share", "download_logs"}),
    ("paused", None, {"resume", "cancel", "delete", "share", "download_logs"}),
    ("completed", None, {"delete", "share", "download_logs", "download_model", "export_model",
                      "export_gguf"}),
    ("failed", None, {"resume", "delete", "share", "download_logs"}),
])
def test_buttons_follow_the_state_machine(status, requested, expected):
    shown = job(status, requested=requested, attempt=0 if status == "queued" else 1)
    assert enabled_actions(shown, BOB) == expected
    assert enabled_actions(shown, ALICE) == expected
    assert enabled_actions(shown, CAROL) == set()  # another user's job: view only
    assert enabled_actions(None, BOB) == set()


def test_a_full_fine_tune_has_no_merge_and_checkpoints_allow_a_download():
    assert "export_model" not in enabled_actions(
        job("completed", config={"adapter": "full"}), BOB)
    assert "download_model" in enabled_actions(
        job("paused", checkpoints=[{"name": "checkpoint-5"}]), BOB)


def test_user_text_is_text_in_the_header():
    hostile = job(name="[x](http://evil.example) ![i](http://e/i.png) <b>bold</b>",
                  owner="<script>", error="line one <img src=x>\nline two", waiting="**now**")
    text = header(hostile, CAROL)
    assert "](http" not in text and "<b>" not in text and "<img" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "view only" in text and "line two" not in text
    assert as_text("a_b*c") == r"a\_b\*c"
    assert as_text("""Bob's "job" <b>&""") == """Bob's "job" &lt;b&gt;&amp;"""
    assert len(as_text("x" * 1000)) < 400


def test_the_progress_bar_says_where_the_job_is():
    bar = progress_bar(job(progress={"step": 5, "total_steps": 20, "phase": "saving"}),
                       {"eta_s": 65, "elapsed_s": 30})
    assert 'width:25.0%' in bar and "saving" in bar and "ETA 1m05s" in bar


def test_checkpoints_show_the_best_one():
    best = {"name": "checkpoint-5", "step": 5, "size_bytes": 2**20, "loss": 1.5, "best": True}
    frame = checkpoints_frame([best])
    assert frame.iloc[0].to_dict() == {"name": "checkpoint-5 (best)", "step": 5, "size MB": 1.0,
                                       "loss": 1.5}
    evaluated = checkpoints_frame([{**best, "eval_loss": 1.75}])  # a job that evaluates
    assert evaluated.iloc[0]["eval loss"] == 1.75


def test_the_best_checkpoint_is_chosen_by_eval_loss_where_the_job_evaluates():
    checkpoints = [{"step": 4, "loss": 2.0, "eval_loss": 1.5}, {"step": 8, "loss": 1.0,
                                                                 "eval_loss": 1.9}]
    mark_best(checkpoints)
    assert [c.get("best", False) for c in checkpoints] == [True, False]
    plain = [{"step": 4, "loss": 2.0}, {"step": 8, "loss": 1.0}]
    mark_best(plain)
    assert [c.get("best", False) for c in plain] == [False, True]


def test_the_form_comes_from_the_schema():
    assert set(FIELD_NAMES) == {n for n, f in SCHEMA.items() if f.form}
    assert len(FIELD_NAMES) == len(set(FIELD_NAMES))
    assert SOURCE_FIELDS == ["method", "model", "dataset", "dataset_format"]
    assert "learning_rate" in COMMON_FIELDS and "beta" in ADVANCED_FIELDS
    assert "preset" not in FIELD_NAMES  # set by TrainDeck, not typed
    assert all(SCHEMA[n].label for n in FIELD_NAMES)


def test_the_form_shows_only_the_fields_that_apply():
    sft_lora, dpo_full = visibility("sft", "lora"), visibility("dpo", "full")
    assert sft_lora["lora_r"] and not dpo_full["lora_r"]
    assert dpo_full["beta"] and not sft_lora["beta"]
    assert sft_lora["packing"] and not dpo_full["packing"]
    assert all(sft_lora[n] and dpo_full[n] for n in ("learning_rate", "model", "max_steps"))


def test_compare_legends_are_text():
    figure = compare_chart({"j1": ('<a href="http://x">n</a>', [{"step": 1, "loss": 2.0}])})
    assert figure.data[0].name == '&lt;a href="http://x"&gt;n&lt;/a&gt; (j1)'
    assert figure.layout.showlegend
    assert JobStatus.RUNNING == "running"


def test_charts_wait_for_the_first_step_instead_of_drawing_empty_axes():
    figures = job_charts([])
    assert [f.layout.annotations[0].text for f in figures[:4]] == ["waiting for the first step"] * 4
    assert figures[4:] == (None, None)


def test_a_preference_run_gets_reward_charts_and_an_sft_run_does_not():
    dpo = [{"step": s, "loss": 0.69 - s / 100, "rewards/chosen": s / 10,
            "rewards/rejected": -s / 10, "rewards/margins": s / 5,
            "rewards/accuracies": 0.5 + s / 20} for s in range(1, 6)]
    rewards, accuracy = job_charts(dpo)[4:]
    assert {t.name for t in rewards.data} >= {"chosen", "rejected", "margin"}
    assert list(accuracy.data[-1].x) == [1, 2, 3, 4, 5]
    assert job_charts([{"step": 1, "loss": 6.0}])[4:] == (None, None)


def test_kto_and_a_reward_model_chart_what_each_logs():
    kto = [{"step": s, "loss": 0.5, "rewards/chosen": s / 10, "rewards/rejected": -s / 10,
            "rewards/margins": s / 5, "kl": 0.1} for s in range(1, 6)]
    rewards, accuracy = job_charts(kto)[4:]
    assert {t.name for t in rewards.data} >= {"chosen", "rejected", "margin"}
    assert accuracy is None  # KTO logs no accuracy: no empty chart
    reward_model = [{"step": s, "loss": 0.6, "accuracy": 0.5 + s / 20, "margin": s / 4,
                     "mean_reward": 0.1, "min_reward": -1.0, "max_reward": 1.0}
                    for s in range(1, 6)]
    scores, accuracy = job_charts(reward_model)[4:]
    assert {t.name for t in scores.data} >= {"mean score", "lowest", "highest", "margin"}
    raw = next(t for t in accuracy.data if t.name == "accuracy (raw)")
    assert [round(float(y), 2) for y in raw.y] == [0.55, 0.6, 0.65, 0.7, 0.75]


def test_compare_gives_each_method_its_own_loss_axis():
    figure = compare_chart({"sft1": ("a", [{"step": 1, "loss": 6.0}]),
                            "dpo1": ("b", [{"step": 1, "loss": 0.69}]),
                            "sft2": ("c", [{"step": 1, "loss": 5.0}])},
                           {"sft1": "sft", "dpo1": "dpo", "sft2": "sft"})
    assert [t.yaxis for t in figure.data] == ["y", "y2", "y"]
    methods = ("sft", "dpo", "kto", "reward")
    four = compare_chart({m: (m, [{"step": 1, "loss": 1.0}]) for m in methods},
                         {m: m for m in methods})
    assert [t.yaxis for t in four.data] == ["y", "y2", "y3", "y4"]
    layout = four.layout
    positions = [layout.xaxis.domain[1], layout.yaxis3.position, layout.yaxis4.position]
    assert positions == sorted(positions) and positions[-1] <= 1  # side by side, none off the plot
    assert four.layout.yaxis4.title.text == "REWARD loss"
    assert figure.layout.yaxis.title.text == "SFT loss"
    assert figure.layout.yaxis2.title.text == "DPO loss"


def test_resumes_and_micro_batch_changes_are_marked_on_the_loss_chart():
    job = {"attempts": [{"resume_from": None}, {"resume_from": "checkpoint-30"}],
           "microbatch_changes": [{"at_step": 12, "to": {"per_device_train_batch_size": 2}}]}
    events = run_events(job)
    assert events == [(30, "resumed"), (12, "micro-batch 2")]
    loss = job_charts([{"step": s, "loss": 1.0} for s in range(1, 40)], events)[0]
    assert sorted(shape.x0 for shape in loss.layout.shapes) == [12, 30]


def test_the_machine_chart_breaks_where_nobody_watched():
    sample = {"cpu_percent": 50.0, "memory_percent": 10.0, "gpus": []}
    samples = [{**sample, "time": t} for t in (1000.0, 1002.0, 1004.0, 1064.0, 1066.0)]
    cpu = list(system_chart(samples).data[0].y)
    assert cpu == [50.0, 50.0, 50.0, None, 50.0, 50.0]  # no line across the minute unwatched


def test_a_failed_check_marks_the_fields_the_error_carries_and_only_those():
    problems = ConfigError([Problem("learning_rate must be > 0, got -1", ("learning_rate",)),
                            Problem("unknown field 'lr'", ("lr",)),
                            Problem("eval_dataset held.jsonl: no such file", ("eval_dataset",))])
    assert bad_fields(problems) == {"learning_rate", "eval_dataset"}
    # The words are not read: only the fields the error carries are marked.
    assert bad_fields(ConfigError("learning_rate must be > 0, got -1")) == set()
    marks = dict(zip(FIELD_NAMES, field_marks({"learning_rate"}), strict=True))
    assert marks["learning_rate"]["elem_classes"] == ["td-bad-field"]
    assert all(update["elem_classes"] == [] for name, update in marks.items()
               if name != "learning_rate")
