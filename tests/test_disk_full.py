"""A disk that fills up while a job trains (a small tmpfs holds the workspace): while it is full
the job shows `failed` with ENOSPC named as its cause and /health says the disk is full and what
cannot be recorded; a submit meanwhile is refused and leaves nothing behind; once there is room
everything is written down and the job resumes from its last complete checkpoint. And a disk
below the console's floor (--disk-floor-gb, raised above the free space) holds every job back,
saying why, in /health, the job and a banner over every tab."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
import yaml
from conftest import processes_of
from harness import (
    BROWSER_REQUIRED,
    CHROMIUM,
    browser_page,
    console_client,
    start_console,
    stop_console,
    wait_until,
)

pytestmark = pytest.mark.slow
FLOOR_GB = "0.01"  # about 10 MiB: the small disk holds a job's checkpoints above it


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
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
    process, url = start_console(workspace, "--disk-floor-gb", FLOOR_GB, log_dir=tmp_path)
    try:
        client = console_client(url)

        def job() -> dict:
            return client.predict(job_id, api_name="/get_job")

        job_id = client.predict({"max_steps": 100000, "save_steps": 5, "learning_rate": 1e-3},
                                api_name="/submit_job")["job_id"]
        wait_until(lambda: job()["progress"].get("step", 0) >= 7, 120,
                   "the job to pass its first checkpoint (step 5)")
        assert client.predict(api_name="/health")["status"] == "ok"
        fill(small_disk)
        job_file = workspace / "jobs" / job_id / "job.yaml"
        wait_until(lambda: not processes_of(job_file), 60, "the trainer to die of the full disk")

        # At once, while the disk is still full: the job is not shown running, and says why.
        shown = wait_until(lambda: (j := job())["status"] != "running" and j, 5,
                           "the job to show that its trainer died")
        assert shown["status"] == "failed" and shown["unrecorded"]
        assert "no space left on device (ENOSPC)" in shown["error"]
        health = client.predict(api_name="/health")
        assert health["status"] == "disk full" and health["running"] == 0
        assert health["disk"]["unrecorded"] == [job_id]
        assert "Nothing can be recorded" in health["disk"]["message"]

        folders = sorted((workspace / "jobs").iterdir())
        with pytest.raises(Exception) as refused:
            client.predict({"max_steps": 1}, api_name="/submit_job")
        assert "could not store the job" in str(refused.value)
        assert "No space left on device" in str(refused.value)
        assert sorted((workspace / "jobs").iterdir()) == folders  # no orphan folder
        assert job()["status"] == "failed"  # still, for the whole time the disk stays full

        (small_disk / "filler").unlink()
        ended = wait_until(lambda: not (j := job())["unrecorded"] and j, 30,
                           "the job's end to be recorded once there is room")
        assert ended["status"] == "failed"
        assert "no space left on device (ENOSPC)" in ended["error"]
        assert ended["last_checkpoint"] is not None
        assert ended["attempts"][-1]["status"] == "failed"
        record = yaml.safe_load((workspace / "jobs" / job_id / "record.json").read_text())
        assert record["status"] == "failed"  # the folder's copy too (repair-db rebuilds from it)
        wait_until(lambda: client.predict(api_name="/health")["status"] == "ok", 10,
                   "/health to say the disk is fine again")

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


@pytest.fixture(scope="module")
def console_over_its_floor(tmp_path_factory):
    """A console whose floor is far above any disk's free space: nothing may start. Shared by
    the tests below: each counts the jobs held back from what it finds."""
    folder = tmp_path_factory.mktemp("over-its-floor")
    process, url = start_console(folder / "workspace", "--disk-floor-gb", "1000000",
                                 "--no-warm-start", log_dir=folder)  # no job starts here
    yield console_client(url), url
    stop_console(process)


def held_back(client) -> int:
    return client.predict(api_name="/health")["disk"]["held_back"]


def jobs(count: int) -> str:
    return f"{count} queued job{'s' if count != 1 else ''}"


def test_below_the_floor_jobs_wait_saying_why_and_health_says_so(console_over_its_floor):
    client, _ = console_over_its_floor
    held = held_back(client)
    job_id = client.predict({"max_steps": 1}, api_name="/submit_job")["job_id"]
    waiting = wait_until(lambda: client.predict(job_id, api_name="/get_job")["waiting"], 10,
                         "the job to say why it waits")
    assert "held back" in waiting and "below the floor of 1000000.0 GiB" in waiting
    health = client.predict(api_name="/health")
    assert health["status"] == "disk low" and health["disk"]["held_back"] == held + 1
    assert f"{jobs(held + 1)} held back" in health["disk"]["message"]
    assert "--disk-floor-gb" in health["disk"]["message"]
    assert client.predict(job_id, api_name="/get_job")["status"] == "queued"  # never started


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM) and not BROWSER_REQUIRED,
                    reason="Debian's chromium is not installed (make test installs it)")
def test_a_banner_over_every_tab_says_the_disk_is_low_and_follows_the_queue(
        console_over_its_floor):
    from playwright.sync_api import expect

    client, url = console_over_its_floor
    with browser_page(url) as page:
        banner = page.locator("#disk-banner")
        held = held_back(client)  # the other test's job, when it ran first
        expect(banner).to_contain_text("The workspace's disk is low", timeout=30000)
        expect(banner).to_contain_text(f"{jobs(held)} held back until there is room" if held
                                       else "No job starts until there is room")
        client.predict({"max_steps": 1}, api_name="/submit_job")
        # Kept up to date on the console's tick, on the tab shown first (New job)...
        expect(banner).to_contain_text(f"{jobs(held + 1)} held back", timeout=15000)
        for tab in ("Jobs", "System"):  # ...and over every other
            page.get_by_role("tab", name=tab).click()
            expect(banner).to_be_visible()
            expect(banner).to_contain_text(f"{jobs(held + 1)} held back")
