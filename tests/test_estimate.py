"""The run length said before submitting: steps from the config and the data, time from the pace
of the newest finished run that did the same work per step."""

from engine.config import JobConfig
from engine.console.records.job import Job, JobStatus
from engine.console.scheduling.estimate import describe_length, pace_of, planned_steps


def finished(job_id, finished_at, status=JobStatus.COMPLETED, **config):
    return Job(job_id=job_id, name=job_id, config=JobConfig(**config), status=status,
               finished_at=finished_at)


def test_steps_come_from_max_steps_or_from_rows_batch_and_epochs():
    assert planned_steps(JobConfig(max_steps=30), rows=85) == 30
    epochs = JobConfig(per_device_train_batch_size=4, gradient_accumulation_steps=4,
                       num_train_epochs=2)
    assert planned_steps(epochs, rows=85) == 12  # 6 steps an epoch (85 rows / 16), twice
    assert planned_steps(JobConfig(), rows=None) is None  # a Hub dataset: the trainer counts


def test_the_pace_is_the_newest_finished_run_with_the_same_work_per_step():
    jobs = [finished("old", 100.0), finished("new", 200.0),
            finished("failed", 300.0, status=JobStatus.FAILED),
            finished("other-batch", 400.0, per_device_train_batch_size=2)]
    pace = pace_of(JobConfig(max_steps=500), jobs, {"old": 1.0, "new": 4.0}.get)
    assert pace == ("new", 4.0)
    said = describe_length(JobConfig(max_steps=500), 85, pace)
    assert "**500 optimizer steps**" in said and "about **2 min** at the pace of job `new`" in said
    alone = describe_length(JobConfig(), 85, None)
    assert "**11 optimizer steps** (85 rows, 1 epoch)" in alone and "no finished run" in alone
