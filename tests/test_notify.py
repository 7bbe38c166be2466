"""Notifications: the webhook's body and Slack form, deliveries that fail without holding
anything up, the address rules of a shared console, and real jobs (completed, failed, cancelled)
notifying a local HTTP server, through the engine and through `app.py --notify-url`."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gradio_client import Client

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.notify import Notifier, check_job_url
from engine.console.users import LOCAL_USER
from engine.sources import sample_dataset

from conftest import QUICK, shutdown, wait_for_status, wait_until
from harness import free_port
from harness import start_console as launch_console
from harness import stop_console

FIELDS = {"event", "job_id", "name", "owner", "status", "error", "final_loss", "best_loss",
          "best_eval_loss", "duration_s", "url"}


class Receiver:
    """A local webhook endpoint that keeps every JSON body POSTed to it."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, job_id):
        return [b["event"] for b in self.bodies if b.get("job_id") == job_id]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


JOB = {"job_id": "20261201-101010-abcd", "name": "run *1*", "owner": "bob", "status": "failed",
       "error": "out of memory", "final_loss": 1.25, "best_loss": 1.0, "best_eval_loss": None,
       "run_s": 61.0}


def test_the_body_has_the_documented_fields_and_a_slack_form(receiver):
    notifier = Notifier([receiver.url], public_url="https://deck.example/")
    assert notifier.payload("failed", JOB) == {
        "event": "failed", "job_id": JOB["job_id"], "name": "run *1*", "owner": "bob",
        "status": "failed", "error": "out of memory", "final_loss": 1.25, "best_loss": 1.0,
        "best_eval_loss": None, "duration_s": 61.0,
        "url": f"https://deck.example/?job={JOB['job_id']}"}
    slack = Notifier([receiver.url], fmt="slack").formatted(notifier.payload("failed", JOB))
    assert set(slack) == {"text"} and "failed" in slack["text"] and "out of memory" in slack["text"]
    with pytest.raises(ConfigError, match="--notify-url must be an http:// or https:// URL"):
        Notifier(["file:///etc/passwd"])


def test_a_dead_endpoint_is_retried_then_recorded_without_holding_the_caller():
    failures = []
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    notifier = Notifier([dead], retries=2, backoff_s=0.05,
                        record_failure=lambda job_id, error: failures.append((job_id, error)))
    notifier.start()
    started = time.monotonic()
    notifier.notify("completed", {**JOB, "status": "completed"}, None, restricted=False)
    assert time.monotonic() - started < 0.1  # queued, not sent, by the caller
    wait_until(lambda: failures, 10, "the failed delivery to be recorded")
    notifier.stop()
    assert failures[0][0] == JOB["job_id"]
    assert "failed after 3 tries" in failures[0][1] and "127.0.0.1" in failures[0][1]


def test_a_jobs_own_webhook_on_a_shared_console_must_be_a_public_address(receiver):
    with pytest.raises(ConfigError, match="on this machine or a private network"):
        check_job_url(receiver.url, shared_console=True, admin=False)
    check_job_url(receiver.url, shared_console=True, admin=True)  # an admin's may
    check_job_url(receiver.url, shared_console=False, admin=False)  # one person's console
    failures = []
    notifier = Notifier(backoff_s=0.01, retries=0,
                        record_failure=lambda job_id, error: failures.append(error))
    notifier.start()
    notifier.notify("completed", JOB, receiver.url, restricted=True)  # checked again at delivery
    wait_until(lambda: failures, 10, "the refused delivery to be recorded")
    notifier.stop()
    assert receiver.bodies == [] and "private network" in failures[0]


def test_on_a_shared_console_a_users_webhook_is_public_and_hidden_from_others(idle_engine):
    engine = idle_engine
    alice, bob, carol = (engine.users.get(n) for n in ("alice", "bob", "carol"))
    inside = "http://127.0.0.1:9/hook"
    with pytest.raises(ConfigError, match="notify_url .* on this machine or a private network"):
        engine.jobs.submit(bob, {"max_steps": 10, "notify_url": inside})
    assert engine.store.all() == []  # refused, nothing queued
    with pytest.raises(ConfigError, match="notify_url must be an http:// or https:// URL"):
        engine.jobs.submit(bob, {"max_steps": 10, "notify_url": "file:///etc/passwd"})
    job_id = engine.jobs.submit(alice, {"max_steps": 10, "notify_url": inside})["job_id"]
    assert engine.views.get_job(alice, job_id)["config"]["notify_url"] == inside
    assert engine.views.get_job(carol, job_id)["config"]["notify_url"] != inside  # hidden
    mine = engine.jobs.submit(bob, {"max_steps": 10})["job_id"]
    engine.jobs.cancel(bob, mine)
    with pytest.raises(ConfigError, match="on this machine or a private network"):
        engine.jobs.resume(bob, mine, changes={"notify_url": inside})  # nor on resume
    assert engine.store.get(mine).status == "cancelled"


@pytest.mark.slow
def test_a_job_that_lowers_its_micro_batch_and_then_fails_tells_both(tmp_path, receiver):
    engine = Engine(tmp_path / "workspace", notifier=Notifier([receiver.url], backoff_s=0.1))
    engine.start()
    engine.scheduler.tick_s = 0.1
    try:
        engine.supervisor.extra_env = {"TRAINDECK_FAULTS": "oom-always"}
        failed = engine.jobs.submit(LOCAL_USER, {**QUICK, "max_steps": 3, "name": "fails",
                                                 "per_device_train_batch_size": 2})["job_id"]
        assert wait_for_status(engine, failed)["status"] == "failed"
        wait_until(lambda: "failed" in receiver.events(failed), 30, "the failure's notification")
        time.sleep(1)  # time for a duplicate to arrive, if one were sent
    finally:
        shutdown(engine)
    # Out of memory at micro-batch 2, lowered to 1 (told), out of memory again: failed (told).
    assert receiver.events(failed) == ["micro_batch_lowered", "failed"]
    failure = next(b for b in receiver.bodies if b["event"] == "failed")
    assert set(failure) == FIELDS and failure["name"] == "fails" and failure["owner"] == "local"
    assert "out of GPU memory" in failure["error"]


@pytest.mark.slow
def test_the_console_flag_notifies_each_end_once_and_shows_a_dead_endpoint(tmp_path, receiver):
    """Through `app.py --notify-url`: a cancelled, a failed and a completed job, one
    notification each; a second, dead endpoint slows none of them and is shown on the jobs."""
    dead = f"http://127.0.0.1:{free_port()}/hook"
    process, url = launch_console(tmp_path / "workspace", "--notify-url", receiver.url,
                                  "--notify-url", dead,
                                  env={"TRAINDECK_NOTIFY_BACKOFF_S": "0.1"})
    try:
        client = Client(url, verbose=False)

        def status(job_id):
            return client.predict(job_id, api_name="/get_job")["status"]

        long = client.predict({"max_steps": 100000, "name": "long"}, api_name="/submit_job")
        wait_until(lambda: status(long["job_id"]) == "running", 120, "the long job to start")
        # Queued behind it: a job whose dataset is gone by the time it starts, and a plain one.
        vanishing = tmp_path / "vanishing.jsonl"
        vanishing.write_text(sample_dataset("messages").read_text())
        broken = client.predict({**QUICK, "dataset": str(vanishing), "name": "broken"},
                                api_name="/submit_job")["job_id"]
        plain = client.predict({**QUICK, "max_steps": 3, "name": "plain"},
                               api_name="/submit_job")["job_id"]
        vanishing.unlink()
        client.predict(long["job_id"], api_name="/cancel_job")
        wait_until(lambda: status(plain) == "completed", 180,
                   "the queue to go on: the broken job failing, the plain one completing")
        jobs = {"long": long["job_id"], "broken": broken, "plain": plain}
        wait_until(lambda: all(receiver.events(j) for j in jobs.values()), 30,
                   "a notification for each job")
        wait_until(lambda: all(client.predict(j, api_name="/get_job")["notify_error"]
                               for j in jobs.values()), 30,
                   "the dead endpoint's failure on every job")
        time.sleep(1)  # time for a duplicate to arrive, if one were sent
        assert {name: receiver.events(j) for name, j in jobs.items()} == {
            "long": ["cancelled"], "broken": ["failed"], "plain": ["completed"]}
        assert all(set(body) == FIELDS for body in receiver.bodies)
        error = client.predict(plain, api_name="/get_job")["notify_error"]
        assert "failed after 4 tries" in error
    finally:
        stop_console(process)
