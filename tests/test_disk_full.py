"""A disk that fills up while a job trains (a small tmpfs holds the workspace): the job ends
`failed` with ENOSPC named as its cause once the database can be written again, a submit meanwhile
is refused and leaves nothing behind, and the job resumes from its last complete checkpoint."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
from gradio_client import Client

from harness import start_console, stop_console

from conftest import processes_of, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write until not even 4 KiB more fits."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_fails_the_job_with_its_cause_and_it_resumes(small_disk, tmp_path):
    workspace = small_disk / "workspace"
    process, url = start_console(workspace, log_dir=tmp_path)
    try:
        client = Client(url, verbose=False)

        def job() -> dict:
            return client.predict(job_id, api_name="/get_job")

        job_id = client.predict({"max_steps": 100000, "save_steps": 5, "learning_rate": 1e-3},
                                api_name="/submit_job")["job_id"]
        wait_until(lambda: job()["progress"].get("step", 0) >= 7, 120,
                   "the job to pass its first checkpoint (step 5)")
        fill(small_disk)
        job_file = workspace / "jobs" / job_id / "job.yaml"
        wait_until(lambda: not processes_of(job_file), 60, "the trainer to die of the full disk")

        folders = sorted((workspace / "jobs").iterdir())
        with pytest.raises(Exception) as refused:
            client.predict({"max_steps": 1}, api_name="/submit_job")
        assert "could not store the job" in str(refused.value)
        assert "No space left on device" in str(refused.value)
        assert sorted((workspace / "jobs").iterdir()) == folders  # no orphan folder
        assert client.predict(api_name="/health")["status"] == "ok"
        assert job()["status"] == "running"  # the end cannot be written down yet...

        (small_disk / "filler").unlink()
        ended = wait_until(lambda: (j := job())["status"] == "failed" and j, 30,
                           "the job's end to be recorded once there is room")  # ...but it is
        assert "no space left on device (ENOSPC)" in ended["error"]
        assert ended["last_checkpoint"] is not None

        resumed = client.predict(job_id, None, None, False, api_name="/resume_job")
        assert resumed["status"] in ("queued", "running")
        checkpoint_step = int(ended["last_checkpoint"].split("-")[1])
        wait_until(lambda: job()["status"] == "running"
                   and job()["progress"].get("step", 0) > checkpoint_step, 120,
                   f"the resumed job to train past step {checkpoint_step}")
        assert job()["attempts"][-1]["resume_from"] == ended["last_checkpoint"]
        client.predict(job_id, api_name="/cancel_job")
        wait_until(lambda: job()["status"] == "cancelled", 60, "the job to be cancelled")
        assert len(client.predict(None, api_name="/list_jobs")) == 1
    finally:
        stop_console(process)
