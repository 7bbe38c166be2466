"""Upload retention, as the README promises: an upload no job names is removed once it is older
than the retention age, and the console's own timer does it."""

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until

from engine.config import JobConfig
from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER
from engine.console.records.job import Job, JobStatus
from engine.console.results.uploads import Retention

DAY_S = 24 * 3600


def upload(engine: Engine, user, folder: Path, name: str, text: str) -> Path:
    """Store a dataset file for `user` as /upload_dataset does; returns the stored path."""
    source = folder / name
    source.write_text(text)
    return Path(engine.artifacts.upload_dataset(user, source)["dataset"])


def last_uploaded(path: Path, seconds_ago: float) -> None:
    then = time.time() - seconds_ago
    os.utime(path, (then, then))


def add_job(engine: Engine, job_id: str, owner: str, status: JobStatus, **config) -> None:
    engine.store.add(Job(job_id=job_id, name=job_id, owner=owner, status=status.value,
                         seq=engine.store.next_seq(), config=JobConfig(**config)))


def test_only_old_uploads_no_job_names_are_removed(idle_engine, tmp_path):
    bob, carol = idle_engine.users.get("bob"), idle_engine.users.get("carol")
    stored = {name: upload(idle_engine, bob, tmp_path, f"{name}.jsonl", f'{{"text": "{name}"}}\n')
              for name in ("unused", "queued", "running", "paused", "completed", "eval",
                           "young")}
    # Same name and content as bob's unused file, so the same stored file name: only the path
    # tells them apart.
    carols = upload(idle_engine, carol, tmp_path, "unused.jsonl", '{"text": "unused"}\n')
    assert carols.name == stored["unused"].name and carols != stored["unused"]
    for name, path in {**stored, "carols": carols}.items():
        last_uploaded(path, 60 if name == "young" else 2 * DAY_S)
    for status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.COMPLETED):
        add_job(idle_engine, status.value, "bob", status, dataset=str(stored[status.value]))
    add_job(idle_engine, "evaluates", "bob", JobStatus.FAILED,
            eval_dataset=str(stored["eval"]))
    add_job(idle_engine, "carols", "carol", JobStatus.QUEUED, dataset=str(carols))

    assert idle_engine.artifacts.clean_uploads() == [stored["unused"]]
    assert not stored["unused"].exists()
    assert all(path.exists() for name, path in stored.items() if name != "unused")
    assert carols.exists()


def test_deleting_the_job_that_named_an_old_upload_lets_it_go(idle_engine, tmp_path):
    bob = idle_engine.users.get("bob")
    stored = upload(idle_engine, bob, tmp_path, "data.jsonl", '{"text": "x"}\n')
    last_uploaded(stored, 2 * DAY_S)
    add_job(idle_engine, "done", "bob", JobStatus.COMPLETED, dataset=str(stored))
    assert idle_engine.artifacts.clean_uploads() == [] and stored.exists()
    idle_engine.jobs.delete(bob, "done")
    assert idle_engine.artifacts.clean_uploads() == [stored]


def test_an_upload_is_kept_for_the_retention_age_after_its_last_upload(idle_engine, tmp_path):
    bob = idle_engine.users.get("bob")
    stored = upload(idle_engine, bob, tmp_path, "data.jsonl", '{"text": "x"}\n')
    age = idle_engine.artifacts.retention.max_age_s
    assert age == DAY_S  # the README's "after a day"
    last_uploaded(stored, age - 60)
    assert idle_engine.artifacts.clean_uploads() == []
    # Uploading the same content again counts as a fresh use.
    last_uploaded(stored, age + 60)
    assert upload(idle_engine, bob, tmp_path, "data.jsonl", '{"text": "x"}\n') == stored
    assert idle_engine.artifacts.clean_uploads() == []
    assert idle_engine.artifacts.clean_uploads(now=time.time() + age + 60) == [stored]


def test_nothing_outside_a_users_upload_folder_is_touched(idle_engine, tmp_path):
    uploads = idle_engine.workspace.uploads_dir
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.jsonl").write_text("x")
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / "loose.jsonl").write_text("x")  # not in a user's folder
    os.symlink(outside, uploads / "linked")  # a user folder that leads elsewhere
    for path in (outside / "keep.jsonl", uploads / "loose.jsonl"):
        last_uploaded(path, 2 * DAY_S)
    assert idle_engine.artifacts.clean_uploads() == []
    assert (outside / "keep.jsonl").exists() and (uploads / "loose.jsonl").exists()


def retention_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "upload retention"]


@pytest.fixture
def quick_retention_engine(tmp_path):
    """A started engine whose timer looks every 0.1 s for uploads unused for 30 s; no warm
    trainer, so it starts no process."""
    engine = Engine(tmp_path / "workspace", warm_start=False,
                    upload_retention=Retention(max_age_s=30, check_every_s=0.1)).start()
    yield engine
    engine.close()


def test_the_console_removes_unused_uploads_on_its_own(quick_retention_engine, tmp_path):
    engine = quick_retention_engine
    unused = upload(engine, LOCAL_USER, tmp_path, "unused.jsonl", '{"text": "a"}\n')
    named = upload(engine, LOCAL_USER, tmp_path, "named.jsonl", '{"text": "b"}\n')
    add_job(engine, "paused", LOCAL_USER.name, JobStatus.PAUSED, dataset=str(named))
    for path in (unused, named):  # both past the age only once the job names `named`
        last_uploaded(path, 60)
    wait_until(lambda: not unused.exists(), 15, "the timer to remove the unused upload")
    # The round that removed `unused` also looked at `named`, as old: the job kept it.
    assert named.exists()


def test_the_timer_stops_with_the_console(tmp_path):
    before = retention_threads()
    engine = Engine(tmp_path / "workspace", warm_start=False).start()
    assert len(retention_threads()) == len(before) + 1
    engine.close()
    assert retention_threads() == before
