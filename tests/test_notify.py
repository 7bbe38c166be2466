"""Notifications: the webhook's body and Slack form, deliveries that fail without holding
anything up (a dead endpoint delays no other), the address rules of a shared console (the
connection goes to the address that was checked, over TLS verified for the URL's name), and real
jobs (completed, failed, cancelled) notifying a local HTTP server, through the engine and through
`app.py --notify-url`."""

import datetime
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import QUICK, shutdown, wait_for_status
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from harness import console_client, free_port, stop_console, wait_until
from harness import start_console as launch_console

from engine.config import ConfigError
from engine.console.engine import Engine
from engine.console.people import notify
from engine.console.people.notify import Notifier, check_job_url
from engine.console.people.users import LOCAL_USER
from engine.console.people.webhook import WebhookClient
from engine.sources import sample_dataset

FIELDS = {"event", "job_id", "name", "owner", "status", "error", "final_loss", "best_loss",
          "best_eval_loss", "duration_s", "url"}


class Receiver:
    """A local webhook endpoint that keeps every JSON body POSTed to it."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.bodies: list[dict] = []
        self.hosts: list[str] = []  # each request's Host header
        received, hosts = self.bodies, self.hosts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hosts.append(self.headers["Host"])
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hook"
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
    with pytest.raises(ConfigError, match="retries must be 0 to 10 and their first wait 0 to 60"):
        Notifier([receiver.url], retries=100)  # bounded: a delivery gives up in time


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


def test_jobs_own_webhooks_filling_every_slot_never_hold_back_the_consoles(receiver,
                                                                           monkeypatch):
    monkeypatch.setattr(notify, "MAX_ENDPOINTS", 1)
    failures = []
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers
        notifier = Notifier([receiver.url], timeout_s=5, retries=0,
                            record_failure=lambda job_id, error: failures.append(error))
        notifier.start()
        silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        notifier.notify("completed", JOB, silent_url, restricted=False)  # the one slot
        notifier.notify("failed", JOB, "http://127.0.0.1:9/other", restricted=False)
        wait_until(lambda: len(receiver.bodies) == 2, 4, "the console's 2 notifications")
        assert failures == ["notification not sent: 1 webhook endpoints are busy already"]
    notifier.stop(wait_s=10)


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


def test_a_dead_endpoint_delays_no_other_endpoint(receiver):
    failures = []
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers
        dead = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        notifier = Notifier([dead, receiver.url], timeout_s=5, retries=2, backoff_s=1,
                            record_failure=lambda job_id, error: failures.append(job_id))
        notifier.start()
        for number in range(3):
            notifier.notify("completed", {**JOB, "job_id": f"job-{number}"}, None, False)
        # Promptly: before the dead endpoint's first try has even timed out.
        wait_until(lambda: len(receiver.bodies) == 3, 4, "the live endpoint's 3 notifications")
        assert failures == []
    notifier.stop(wait_s=10)  # the dead one's connections reset, no more waits: it gives up
    assert sorted(failures) == ["job-0", "job-1", "job-2"]


def test_a_name_that_answers_public_then_private_is_refused(receiver):
    """DNS rebinding: a name checked as public must not be connected to as private. Each try
    resolves once and connects to what it checked; the second try's answer is refused."""
    answers = iter([["1.1.1.1"], ["127.0.0.1"], ["127.0.0.1"]])
    asked, failures = [], []

    def rebinding(host, port):
        asked.append((host, port))
        return next(answers)

    notifier = Notifier(timeout_s=0.5, retries=1, backoff_s=0, resolve=rebinding,
                        record_failure=lambda job_id, error: failures.append(error))
    notifier.start()
    notifier.notify("completed", JOB, f"http://hook.test:{receiver.port}/hook", restricted=True)
    wait_until(lambda: failures, 10, "the refused delivery to be recorded")
    notifier.stop()
    assert receiver.bodies == []  # never at the private address
    assert asked == [("hook.test", receiver.port)] * 2  # one lookup a try, none to connect
    assert "failed after 2 tries" in failures[0] and "private network" in failures[0]


def test_a_delivery_goes_to_the_resolved_address_under_its_own_name(receiver):
    asked = []
    notifier = Notifier([f"http://hook.test:{receiver.port}/hook"], backoff_s=0,
                        resolve=lambda host, port: asked.append(host) or ["127.0.0.1"])
    notifier.start()
    notifier.notify("completed", JOB, None, restricted=False)
    wait_until(lambda: receiver.bodies, 10, "the notification at the resolved address")
    notifier.stop()
    assert asked == ["hook.test"] and receiver.hosts == [f"hook.test:{receiver.port}"]


def tls_contexts(tmp_path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A client context trusting a new test authority, and a server context with a certificate
    that authority signed for `name`."""
    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TrainDeck test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)

    def signed(subject, public_key, extension, critical):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(authority)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(extension, critical).sign(authority_key, hashes.SHA256()))

    root = signed(authority, authority_key.public_key(),
                  x509.BasicConstraints(ca=True, path_length=None), True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                                server_key.public_key(),
                                x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    chain, key = tmp_path / "server.pem", tmp_path / "server.key"
    chain.write_bytes(server_certificate.public_bytes(Encoding.PEM))
    key.write_bytes(server_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain, key)
    return ssl.create_default_context(cadata=root.public_bytes(Encoding.PEM).decode()), server


def test_tls_to_the_checked_address_is_verified_for_the_urls_name(tmp_path):
    trusting, serving = tls_contexts(tmp_path, "hook.test")
    names = []
    serving.sni_callback = lambda connection, name, context: names.append(name)
    endpoint = Receiver(tls=serving)
    client = WebhookClient(5, resolve=lambda host, port: ["127.0.0.1"], verify=trusting)
    try:
        url = f"https://hook.test:{endpoint.port}/hook"
        assert client.post(url, b'{"event": "completed"}', public_only=False) is None
        assert names == ["hook.test"] and endpoint.hosts == [f"hook.test:{endpoint.port}"]
        # The same address under a name its certificate is not for: verification refuses it.
        error = client.post(f"https://other.test:{endpoint.port}/hook", b"{}", public_only=False)
        assert "certificate" in error.lower() and endpoint.bodies == [{"event": "completed"}]
    finally:
        client.close()
        endpoint.close()


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
        client = console_client(url)

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
