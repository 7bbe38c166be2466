"""A shared console attacked by a plain user: each finding of the security review, driven through
gradio_client (or the CLI) against a real console with an admin and two users, is refused,
bounded or survived, and the console keeps answering with every job it had."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import harness
import httpx
import psutil
import pytest
from conftest import shutdown, wait_for_status
from gradio_client import Client, handle_file
from harness import REPO, console_client, refused, start_console, stop_console, wait_until

from engine.console.engine import Engine
from engine.console.people.users import LOCAL_USER, add_user

pytestmark = pytest.mark.slow  # real trainers and consoles

QUICK_RUN = {"max_steps": 3, "save_steps": 1}
SUBMITTED: list[str] = []  # every job this module made: all must still be listed at the end


def call(client: Client, api_name: str, *args):
    """An endpoint's answer; a job it submits is remembered (all must be listed at the end)."""
    result = harness.call(client, api_name, *args)
    if api_name == "/submit_job":
        SUBMITTED.append(result["job_id"])
    return result


def settle(client: Client, job_id: str, statuses=("completed", "failed", "cancelled", "paused"),
           timeout: float = 120) -> dict:
    return wait_until(lambda: (job := call(client, "/get_job", job_id))["status"] in statuses
                      and job, timeout, f"job {job_id} to become one of {statuses}")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A console shared by admin alice, users bob and carol (users.yaml), dave (a login from the
    environment: role user by default) and erin (an admin from an --auth @file), with one data
    root; bob's quotas are small to reach them."""
    folder = tmp_path_factory.mktemp("shared-console")
    users = folder / "users.yaml"
    add_user(users, "alice", "alice-secret", "admin")
    add_user(users, "bob", "bob-secret", "user", {"max_jobs": 4, "max_upload_mb": 1})
    add_user(users, "carol", "carol-secret", "user")
    os.chmod(users, 0o644)  # readable by every account: the console must warn about it
    logins = folder / "logins.txt"
    logins.write_text("erin:erin-secret-1:admin\n")
    data_root = folder / "team-data"
    data_root.mkdir()
    rows = [{"text": f"team sentence {n}"} for n in range(40)]
    (data_root / "team.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gradio_tmp = folder / "gradio-tmp"
    process, url = start_console(
        folder / "workspace", "--auth-file", str(users), "--auth", f"@{logins}",
        "--data-root", str(data_root), "--max-upload-mb", "160",
        env={"TRAINDECK_AUTH": "dave:dave-secret-1", "GRADIO_TEMP_DIR": str(gradio_tmp)})
    clients = {name: console_client(url,
                            auth=(name, f"{name}-secret" + ("-1" if name in "dave erin" else "")))
               for name in ("alice", "bob", "carol", "dave", "erin")}
    bobs = call(clients["bob"], "/submit_job", {**QUICK_RUN, "name": "bob's model"})["job_id"]
    settle(clients["bob"], bobs)
    yield {"clients": clients, "url": url, "folder": folder, "workspace": folder / "workspace",
           "data_root": data_root, "gradio_tmp": gradio_tmp, "process": process, "bobs": bobs}
    stop_console(process)


# ---- 1. reading files that are not yours ---------------------------------------------------------


def test_a_user_reads_only_allowed_places_and_a_refusal_reveals_nothing(shared):
    bob, carol = shared["clients"]["bob"], shared["clients"]["carol"]
    outside = shared["folder"] / "outside.csv"
    outside.write_text("secret,columns\n1,2\n")
    words = []
    for path in ("/etc/passwd", "/no/such/file.jsonl", str(outside), "~/.bashrc",
                 "../../../../etc/hostname", str(shared["workspace"] / "jobs.json")):
        message = refused(bob, "/check_job", {"dataset": path})
        assert "not a place this console reads from" in message, (path, message)
        assert "secret" not in message and "columns" not in message
        words.append(message.replace(path, "<path>"))
    assert len(set(words)) == 1  # existing and missing files get the same answer

    stored = call(carol, "/upload_dataset", handle_file(str(shared["data_root"] / "team.jsonl")))
    assert "/uploads/carol/" in stored["dataset"]
    assert "not a place this console reads from" in refused(bob, "/check_job",
                                                            {"dataset": stored["dataset"]})
    checked = call(carol, "/check_job", {"dataset": stored["dataset"]})
    assert checked["dataset"]["rows"] == 40
    team = call(bob, "/check_job", {"dataset": str(shared["data_root"] / "team.jsonl")})
    assert team["dataset"]["rows"] == 40 and team["dataset"]["format"] == "text"


# ---- 2. copying or trying another user's model ---------------------------------------------------


def test_another_users_model_is_off_limits_until_shared(shared):
    clients, bobs = shared["clients"], shared["bobs"]
    bob, carol, alice = clients["bob"], clients["carol"], clients["alice"]
    model = str(shared["workspace"] / "jobs" / bobs / "model")
    checkpoint = str(shared["workspace"] / "jobs" / bobs / "checkpoint-1")
    for source in (model, checkpoint):
        message = refused(carol, "/check_job", {"model": source, "adapter": "full"})
        assert "not a place this console reads from" in message
    assert "not your job" in refused(carol, "/try_model", bobs, "hello", None, 8)
    assert "not your job" in refused(carol, "/download_model", bobs, None)
    assert call(alice, "/check_job", {"model": model})["valid"]  # an admin may

    assert call(bob, "/share_job", bobs, True)["shared"] is True
    assert call(carol, "/check_job", {"model": model})["valid"]
    assert set(call(carol, "/try_model", bobs, "hello", None, 4)) >= {"base", "tuned"}
    assert "not your job" in refused(carol, "/share_job", bobs, False)
    call(bob, "/share_job", bobs, False)
    assert "not your job" in refused(carol, "/try_model", bobs, "hello", None, 8)


def test_heavy_requests_run_one_at_a_time_per_user(shared):
    bob, bobs = shared["clients"]["bob"], shared["bobs"]
    answers: list[str] = []

    def generate():
        try:
            answers.append(str(call(bob, "/try_model", bobs, "hello there", None, 64)))
        except Exception as exc:  # the refusals are what this test looks for
            answers.append(str(exc))

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    busy = [a for a in answers if "busy: bob already has a generation running" in a]
    assert len(answers) == 3 and busy and len(busy) < 3, answers
    # A prompt that looks like an option is just a prompt.
    assert call(bob, "/try_model", bobs, "--help", None, 4)["prompt"] == "--help"


# ---- 3 and 4. values that break serialisation, or never end --------------------------------------


@pytest.mark.parametrize("field,value,words", [
    ("priority", 10**30, "priority must be <= 1000"),
    ("seed", 10**30, "seed must be <= 4294967295"),
    ("seed", 2**32, "seed must be <= 4294967295, got 4294967296"),
    ("max_steps", 1e12, "max_steps must be <= 10000000"),
    ("num_train_epochs", 1e9, "num_train_epochs must be <= 1000"),
    ("gradient_accumulation_steps", 1e9, "gradient_accumulation_steps must be <= 4096"),
    ("lora_r", 100000, "lora_r must be <= 1024"),
    ("dataloader_num_workers", 1000, "dataloader_num_workers must be <= 64"),
    ("max_retries", 1e9, "max_retries must be <= 10"),
    ("timeout_minutes", 1e300, "timeout_minutes must be <= 10080"),
    ("name", "x" * 1_000_000, "name must be at most 200 characters, got 1000000"),
    ("name", "two\nlines", "name must be one line of text"),
])
def test_unbounded_values_are_refused_and_create_nothing(shared, field, value, words):
    bob = shared["clients"]["bob"]
    before = len(call(bob, "/list_jobs", None))
    message = refused(bob, "/submit_job", {field: value})
    assert words in message and len(message) < 2000, message
    assert len(call(bob, "/list_jobs", None)) == before


def test_the_job_list_survives_every_refused_value(shared):
    alice = shared["clients"]["alice"]
    assert "priority must be <= 1000" in refused(alice, "/set_priority", shared["bobs"], 10**30)
    listed = call(alice, "/list_jobs", None)
    assert shared["bobs"] in {j["job_id"] for j in listed}
    assert call(alice, "/get_job", shared["bobs"])["priority"] == 0


def test_every_job_a_user_holds_counts_against_max_jobs(shared):
    """Submit-then-pause used to make jobs without end: paused and finished jobs count too."""
    bob = shared["clients"]["bob"]
    held = [j for j in call(bob, "/list_jobs", None) if j["owner"] == "bob"]
    made = []
    while len(held) + len(made) < 4:
        job = call(bob, "/submit_job", {"max_steps": 100000, "name": "parked"})["job_id"]
        call(bob, "/pause_job", job)
        made.append(job)
    settle(bob, made[-1], statuses=("paused",))
    message = refused(bob, "/submit_job", {"max_steps": 1})
    assert "quota max_jobs: bob holds 4 jobs (quota 4)" in message
    for job in made:
        settle(bob, job, statuses=("paused",))
        assert call(bob, "/delete_job", job)["deleted"]
        SUBMITTED.remove(job)
    assert not (shared["workspace"] / "jobs" / made[0]).exists()


def test_an_invalid_job_is_never_retried(shared):
    """A job that became invalid after it was checked (its dataset vanished) fails once with the
    reason, whatever its max_retries: retrying cannot mend it."""
    bob, data_root = shared["clients"]["bob"], shared["data_root"]
    doomed = data_root / "vanishing.jsonl"
    doomed.write_text((data_root / "team.jsonl").read_text())
    job = call(bob, "/submit_job", {"dataset": str(doomed), "max_steps": 2, "max_retries": 5})
    call(bob, "/pause_job", job["job_id"])
    settle(bob, job["job_id"], statuses=("paused",))
    doomed.unlink()
    call(bob, "/resume_job", job["job_id"], None, None, False)
    failed = settle(bob, job["job_id"], statuses=("failed",))
    assert "no such file" in failed["error"]
    time.sleep(2)  # a retry would have been queued (and started) by now
    again = call(bob, "/get_job", job["job_id"])
    assert again["status"] == "failed"
    assert [a["status"] for a in again["attempts"]] == [a["status"] for a in failed["attempts"]]
    assert [a["status"] for a in again["attempts"]].count("failed") == 1
    call(bob, "/delete_job", job["job_id"])
    SUBMITTED.remove(job["job_id"])


# ---- 5. uploads ----------------------------------------------------------------------------------


def test_uploads_are_bounded_stored_once_and_leave_no_temporary_copy(shared, tmp_path):
    bob, carol = shared["clients"]["bob"], shared["clients"]["carol"]
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"row {n} " + "w" * 60}) + "\n"
                           for n in range(9000)))
    first = call(bob, "/upload_dataset", handle_file(str(one)))
    again = call(bob, "/upload_dataset", handle_file(str(one)))
    assert first["dataset"] == again["dataset"] and again["stored_mb"] == first["stored_mb"]
    assert len(list(Path(first["dataset"]).parent.iterdir())) == 1  # one stored copy
    temporary = [p for p in shared["gradio_tmp"].rglob("*") if p.name == "one.jsonl"]
    assert temporary == []  # moved out of the web server's temporary folder, not copied

    two = tmp_path / "two.jsonl"
    two.write_text(one.read_text().replace("row", "line"))
    message = refused(bob, "/upload_dataset", handle_file(str(two)))
    assert "quota max_upload_mb: bob stores 1 MiB of uploads" in message
    assert "not a .jsonl" not in message

    wrong = tmp_path / "notes.exe"
    wrong.write_text("x")
    assert "a dataset must be one of .jsonl" in refused(carol, "/upload_dataset",
                                                        handle_file(str(wrong)))
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as f:
        f.truncate(161 << 20)  # over --max-upload-mb 160
    # Sent over plain HTTP: gradio_client refuses a file over the limit before sending it, and
    # what must hold is the server's limit, against any client.
    with httpx.Client(base_url=shared["url"], timeout=120) as web:
        web.post("login", data={"username": "carol", "password": "carol-secret"}).raise_for_status()
        with open(huge, "rb") as body:
            answer = web.post("gradio_api/upload", files={"files": ("huge.jsonl", body)})
    assert answer.status_code == 413, (answer.status_code, answer.text)
    assert "maximum allowed size of 167772160 bytes" in answer.text
    assert not list((shared["workspace"] / "uploads").rglob("*huge*"))
    assert not [p for p in shared["gradio_tmp"].rglob("*") if p.name == "huge.jsonl"]


def test_checking_a_huge_single_line_file_takes_bounded_memory(shared, tmp_path):
    carol = shared["clients"]["carol"]
    line = tmp_path / "one-line.jsonl"
    with open(line, "w") as f:
        f.write('{"text": "')
        block = "x" * (1 << 20)
        for _ in range(150):
            f.write(block)
        f.write('"}\n')
    console = psutil.Process(shared["process"].pid)
    stored = call(carol, "/upload_dataset", handle_file(str(line)))
    before = console.memory_info().rss
    message = refused(carol, "/check_job", {"dataset": stored["dataset"]})
    grown = (console.memory_info().rss - before) / 2**20
    assert "line 1 is longer than 16 MiB" in message
    assert grown < 80, f"the console grew by {grown:.0f} MiB checking a 150 MiB line"


# ---- 8. logins -----------------------------------------------------------------------------------


def test_failed_logins_are_throttled_with_a_clear_message(shared):
    url = shared["url"]

    def login(name: str, password: str) -> httpx.Response:
        return httpx.post(f"{url}login", data={"username": name, "password": password}, timeout=30)

    for _ in range(5):
        assert login("carol", "wrong").status_code == 400
    throttled = login("carol", "carol-secret")  # even the right password waits now
    assert throttled.status_code == 429
    assert "too many failed logins for 'carol'" in throttled.json()["detail"]
    wait_until(lambda: login("carol", "carol-secret").status_code == 200, 10,
               "carol's login to be accepted once the back-off passed")


def test_unknown_and_known_names_take_as_long_to_refuse(shared):
    url = shared["url"]

    def refusal_time(name: str) -> float:
        started = time.perf_counter()
        response = httpx.post(f"{url}login", data={"username": name, "password": "wrong"},
                              timeout=30)
        assert response.status_code == 400
        return time.perf_counter() - started

    # Alternated, and the fastest of each: a busy machine only ever adds time, to either.
    times = [(refusal_time("alice"), refusal_time(f"nobody{n}")) for n in range(4)]
    known, unknown = (min(column) for column in zip(*times, strict=True))
    # Before: a known name took ~200 ms (scrypt), an unknown one ~30 ms.
    assert unknown > 0.6 * known, times


def test_logins_default_to_the_user_role_and_passwords_stay_out_of_ps(shared):
    clients, bobs = shared["clients"], shared["bobs"]
    dave, erin = clients["dave"], clients["erin"]
    assert "not your job" in refused(dave, "/delete_job", bobs)  # env login: a plain user
    job = call(dave, "/submit_job", {"max_steps": 100000, "name": "dave's"})["job_id"]
    assert call(erin, "/cancel_job", job)  # an admin named in the @file
    settle(dave, job, statuses=("cancelled",))
    command_line = " ".join(psutil.Process(shared["process"].pid).cmdline())
    assert "secret" not in command_line
    log = Path(shared["process"].log_path).read_text()
    assert "is readable by other accounts on this machine (mode 644)" in log


# ---- 9. what other users see ---------------------------------------------------------------------


def test_other_users_see_the_row_but_not_the_paths_logs_or_errors(shared):
    clients, bobs = shared["clients"], shared["bobs"]
    carol, bob = clients["carol"], clients["bob"]
    theirs = call(carol, "/get_job", bobs)
    assert theirs["config"]["dataset"] == "chat.jsonl" and theirs["config"]["model"] == "tiny-model"
    assert theirs["job_dir"] is None and theirs["command"] is None
    row = next(j for j in call(carol, "/list_jobs", None) if j["job_id"] == bobs)
    assert row["dataset"] == "chat.jsonl" and row["status"] == "completed"
    mine = call(bob, "/get_job", bobs)
    assert mine["config"]["dataset"].endswith("/data/samples/chat.jsonl") and mine["job_dir"]


def test_nothing_was_lost_and_the_console_still_answers(shared):
    alice = shared["clients"]["alice"]
    assert call(alice, "/health")["status"] == "ok"
    listed = {j["job_id"] for j in call(alice, "/list_jobs", None)}
    assert set(SUBMITTED) <= listed


# ---- 7. a damaged or empty database -------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_workspace(tmp_path_factory):
    """A workspace with a completed job and a job cancelled while queued, console closed."""
    workspace = tmp_path_factory.mktemp("history") / "workspace"
    engine = Engine(workspace).start()
    engine.scheduler.tick_s = 0.1
    try:
        done = engine.jobs.submit(LOCAL_USER, {"max_steps": 2, "name": "finished"})["job_id"]
        never = engine.jobs.submit(LOCAL_USER, {"max_steps": 2, "name": "never ran"})["job_id"]
        engine.jobs.cancel(LOCAL_USER, never)
        wait_for_status(engine, done)
    finally:
        shutdown(engine)
    return workspace, done, never


def console_exit(workspace: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", "--workspace", str(workspace), "--port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content", ["", "[]", "{not json"])
def test_a_damaged_database_stops_the_console_and_repair_db_rebuilds_it(
        finished_workspace, tmp_path, content):
    source, done, never = finished_workspace
    workspace = tmp_path / "workspace"
    subprocess.run(["cp", "-a", str(source), str(workspace)], check=True)
    (workspace / "jobs.json").write_text(content)

    refused_start = console_exit(workspace)
    assert refused_start.returncode == 2
    assert "repair-db" in refused_start.stderr and "will not start" in refused_start.stderr
    assert (workspace / "jobs.json").read_text() == content  # never replaced

    repaired = subprocess.run([sys.executable, "app.py", "repair-db", "--workspace",
                               str(workspace)], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert repaired.returncode == 0, repaired.stderr
    assert "rebuilt 2 jobs" in repaired.stdout
    kept = list(workspace.glob("jobs.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text() == content

    engine = Engine(workspace).open()
    try:
        assert engine.views.get_job(LOCAL_USER, done)["status"] == "completed"
        assert engine.views.get_job(LOCAL_USER, done)["progress"]["step"] == 2
        assert engine.views.get_job(LOCAL_USER, never)["status"] == "cancelled"
        assert engine.views.get_job(LOCAL_USER, done)["checkpoints"]
    finally:
        engine.close()


def test_a_deleted_database_beside_job_folders_is_not_started_over(finished_workspace, tmp_path):
    source, _, _ = finished_workspace
    workspace = tmp_path / "workspace"
    subprocess.run(["cp", "-a", str(source), str(workspace)], check=True)
    (workspace / "jobs.json").unlink()
    result = console_exit(workspace)
    assert result.returncode == 2 and "holds 2 job folders" in result.stderr


def test_a_damaged_record_is_listed_as_damaged_and_never_started(finished_workspace, tmp_path):
    source, done, never = finished_workspace
    workspace = tmp_path / "workspace"
    subprocess.run(["cp", "-a", str(source), str(workspace)], check=True)
    database = json.loads((workspace / "jobs.json").read_text())
    for record in database["jobs"].values():
        if record["job_id"] == never:
            record.update(priority=10**30, status="queued", config={**record["config"],
                                                                    "seed": 10**30})
    (workspace / "jobs.json").write_text(json.dumps(database))
    process, url = start_console(workspace, "--no-warm-start")  # it starts no job
    try:
        client = console_client(url)
        listed = {j["job_id"]: j for j in client.predict(None, api_name="/list_jobs")}
        assert listed[done]["status"] == "completed" and not listed[done]["damaged"]
        assert "priority" in listed[never]["damaged"]
        shown = client.predict(never, api_name="/get_job")
        assert shown["config"]["seed"] == "<an integer of 100 bits>"
        time.sleep(1.5)  # several scheduler rounds
        assert client.predict(never, api_name="/get_job")["status"] == "queued"
        assert "damaged" in client.predict(never, api_name="/get_job")["waiting"]
        assert client.predict(api_name="/health")["status"] == "ok"
        client.predict(never, api_name="/cancel_job")
        assert client.predict(never, api_name="/get_job")["status"] == "cancelled"
    finally:
        stop_console(process)
