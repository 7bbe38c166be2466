"""Notifications: a webhook POST when a job completes, fails, is cancelled, is paused to make
room for another (preempted), or has its micro-batch lowered after running out of memory. To
the console's URLs (`--notify-url`) and the job's own `notify_url`; as TrainDeck's JSON, or as
the `{"text": ...}` that Slack and Mattermost incoming webhooks take.

Each endpoint (scheme, host, port) has its own sender, which posts (see `webhook`) with a timeout
and a few retries after growing waits: a slow or dead endpoint holds up no other endpoint, no
status change and no request. A delivery that failed in the end is logged and recorded on the
job (`notify_error`), which its view shows.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.config import ConfigError, shorten, url_problem
from engine.console.metrics.log import MetricsLog
from engine.console.people.users import NotYourJob, Users
from engine.console.people.webhook import Resolver, WebhookClient, reaches_inside, system_resolver
from engine.console.records.job import Job
from engine.console.records.store import JobStore

log = logging.getLogger("traindeck.notify")
FORMATS = ("json", "slack")
EVENTS = {"completed": "completed", "failed": "failed", "cancelled": "was cancelled",
          "preempted": "was paused to make room for a higher-priority job",
          "micro_batch_lowered": "ran out of memory; its micro-batch was lowered"}
MAX_ENDPOINTS = 64  # jobs' own endpoints with deliveries under way at once; a thread each
QUEUE_PER_ENDPOINT = 200
IDLE_S = 30.0  # an endpoint's thread ends after this long with nothing to send
MAX_RETRIES, MAX_BACKOFF_S = 10, 60.0


def check_url(url: str, field_name: str = "notify_url") -> str:
    problem = url_problem(url, field_name)
    if problem:
        raise ConfigError(problem)
    return url


@dataclass
class Delivery:
    job_id: str
    url: str
    body: bytes
    restricted: bool  # a job's own URL on a shared console: never to an inside address


def endpoint_of(url: str) -> str:
    """Deliveries to one endpoint (scheme, host, port) go in order; endpoints are independent."""
    parts = urlsplit(url)
    # Host and port as written: without credentials, and a bad port is for the post to report.
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"


class Notifier:
    """Queues notifications and hands each to its endpoint's sender. Each try has a timeout
    (5 s) and a failed one is retried a few times (3) after growing waits (2, 4, 8 s)."""

    def __init__(self, urls: list[str] | tuple = (), fmt: str = "json",
                 public_url: str | None = None, timeout_s: float = 5.0, retries: int = 3,
                 backoff_s: float | None = None,
                 record_failure: Callable[[str, str], None] = lambda job_id, error: None,
                 resolve: Resolver = system_resolver):
        if fmt not in FORMATS:
            raise ConfigError(f"notify format must be one of {', '.join(FORMATS)}, got "
                              f"{shorten(fmt)}")
        self.urls = [check_url(url, "--notify-url") for url in urls]
        # The operator's endpoints are never refused for want of room: jobs' own URLs (a plain
        # user's among them) can fill MAX_ENDPOINTS, never silence the console's.
        self._console_endpoints = {endpoint_of(url) for url in self.urls}
        self.fmt, self.public_url = fmt, public_url
        self.timeout_s, self.retries, self.resolve = timeout_s, retries, resolve
        self.backoff_s = backoff_s if backoff_s is not None else _backoff_from_environment()
        if not 0 <= retries <= MAX_RETRIES or not 0 <= self.backoff_s <= MAX_BACKOFF_S:
            raise ConfigError(f"notification retries must be 0 to {MAX_RETRIES} and their first "
                              f"wait 0 to {MAX_BACKOFF_S} s, got {retries} and {self.backoff_s}")
        self.record_failure = record_failure
        self.stopping = threading.Event()
        self._senders: dict[str, EndpointSender] = {}
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        with self._lock:
            self._running = True
            self.stopping.clear()
            for sender in self._senders.values():
                sender.start()

    def stop(self, wait_s: float = 2.0) -> None:
        """Deliver what is queued without further waits between tries, for up to `wait_s`."""
        with self._lock:
            self._running = False
            self.stopping.set()
            senders = list(self._senders.values())
        for sender in senders:
            sender.wake()
        deadline = time.monotonic() + wait_s
        for sender in senders:
            sender.join(max(0.0, deadline - time.monotonic()))

    def notify(self, event: str, job: dict[str, Any], job_url: str | None,
               restricted: bool) -> None:
        """Queue the event for the console's URLs and the job's (`job_url`); never blocks."""
        payload = self.payload(event, job)
        body = json.dumps(self.formatted(payload)).encode()
        targets = [(url, False) for url in self.urls]
        if job_url:
            targets.append((job_url, restricted))
        for url, limited in targets:
            problem = self._queue(Delivery(job["job_id"], url, body, limited))
            if problem:
                log.warning("%s: dropped %s for job %s", problem, event, job["job_id"])
                self.record_failure(job["job_id"], f"notification not sent: {problem}")

    def _queue(self, delivery: Delivery) -> str | None:
        """Hand the delivery to its endpoint's sender; what prevented it, if anything."""
        endpoint = endpoint_of(delivery.url)
        with self._lock:
            sender = self._senders.get(endpoint)
            if sender is None:
                jobs_own = sum(e not in self._console_endpoints for e in self._senders)
                if endpoint not in self._console_endpoints and jobs_own >= MAX_ENDPOINTS:
                    return f"{MAX_ENDPOINTS} webhook endpoints are busy already"
                sender = self._senders[endpoint] = EndpointSender(self, endpoint)
                if self._running:
                    sender.start()
            try:
                sender.queue.put_nowait(delivery)
            except queue.Full:
                return f"the queue for {urlsplit(delivery.url).hostname} is full"
        return None

    def retire(self, sender: EndpointSender) -> bool:
        """Forget an idle sender, unless a delivery came meanwhile (then it goes on)."""
        with self._lock:
            if not sender.queue.empty():
                return False
            self._senders.pop(sender.endpoint, None)
            return True

    def payload(self, event: str, job: dict[str, Any]) -> dict[str, Any]:
        link = f"{self.public_url.rstrip('/')}/?job={job['job_id']}" if self.public_url else None
        return {"event": event, "job_id": job["job_id"], "name": job["name"],
                "owner": job["owner"], "status": job["status"], "error": job.get("error"),
                "final_loss": job.get("final_loss"), "best_loss": job.get("best_loss"),
                "best_eval_loss": job.get("best_eval_loss"), "duration_s": job.get("run_s"),
                "url": link}

    def formatted(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.fmt == "json":
            return payload
        loss = payload["final_loss"]
        text = (f"TrainDeck job *{payload['name']}* (`{payload['job_id']}`, {payload['owner']}) "
                f"{EVENTS.get(payload['event'], payload['event'])}"
                + (f"; final loss {loss:.4f}" if isinstance(loss, float) else "")
                + (f": {payload['error']}" if payload["error"] else "")
                + (f" <{payload['url']}|open>" if payload["url"] else ""))
        return {"text": text}


class EndpointSender:
    """Delivers one endpoint's notifications in order on its own thread, so a dead or slow
    endpoint's timeouts and waits hold up only its own. The thread ends once idle."""

    def __init__(self, notifier: Notifier, endpoint: str):
        self.notifier, self.endpoint = notifier, endpoint
        self.queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=QUEUE_PER_ENDPOINT)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"notify {self.endpoint}",
                                            daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """End an idle wait (a full queue means the thread is busy, not waiting)."""
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        client = WebhookClient(self.notifier.timeout_s, self.notifier.resolve)
        try:
            while (delivery := self._next()) is not None:
                try:
                    self._deliver(client, delivery)
                except Exception:  # a bug must not leave the endpoint without its thread
                    log.exception("notification to %s for job %s", self.endpoint,
                                  delivery.job_id)
        finally:
            client.close()

    def _next(self) -> Delivery | None:
        """The next delivery; None once idle (or stopping) with nothing left."""
        while True:
            wait_s = 0 if self.notifier.stopping.is_set() else IDLE_S
            try:
                delivery = self.queue.get(timeout=wait_s) if wait_s else self.queue.get_nowait()
            except queue.Empty:
                if self.notifier.retire(self):
                    return None
                continue
            if delivery is not None:  # None: woken to look at `stopping` again
                return delivery

    def _deliver(self, client: WebhookClient, delivery: Delivery) -> None:
        notifier = self.notifier
        for tries in range(1, notifier.retries + 2):
            error = client.post(delivery.url, delivery.body, delivery.restricted)
            if error is None:
                return
            wait_s = notifier.backoff_s * 2 ** (tries - 1)
            if tries > notifier.retries or notifier.stopping.wait(wait_s):
                break
        host = urlsplit(delivery.url).hostname
        message = f"notification to {host} failed after {tries} tries: {error}"
        log.warning("job %s: %s", delivery.job_id, message)
        notifier.record_failure(delivery.job_id, message)


def _backoff_from_environment() -> float:
    """The first wait between tries (doubling): TRAINDECK_NOTIFY_BACKOFF_S, else 2 s."""
    value = os.environ.get("TRAINDECK_NOTIFY_BACKOFF_S", "2")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"TRAINDECK_NOTIFY_BACKOFF_S must be a number of seconds, got "
                          f"{shorten(value)}") from None


def check_job_url(url: str, shared_console: bool, admin: bool) -> None:
    """At submit: on a console with logins, a plain user's job may notify public addresses only
    (checked again at each delivery, as a name may resolve elsewhere by then)."""
    if url and shared_console and not admin and reaches_inside(url):
        raise ConfigError(f"notify_url {shorten(url, 120)}: the address is on this machine or a "
                          f"private network; a job's webhook must be a public address (an admin "
                          f"can set console-wide ones with --notify-url)")


class JobFacts(Protocol):
    """What a notification tells of a job (the console's job views provide it)."""

    def metrics(self, job_id: str) -> MetricsLog: ...

    def summary(self, job: Job) -> dict[str, Any]: ...


class JobNotifications:
    """Turns what happens to jobs into notifications: listens to status changes (completed,
    failed, cancelled, paused by preemption) and to lowered micro-batches."""

    def __init__(self, notifier: Notifier, store: JobStore, views: JobFacts, users: Users):
        self.notifier, self.store, self.views, self.users = notifier, store, views, users

    def on_status(self, job: Job, previous: str) -> None:
        status = str(job.status)
        if status in ("completed", "failed", "cancelled"):
            self._send(status, job)
        elif status == "paused" and job.preempted_by:
            self._send("preempted", job)

    def on_micro_batch_lowered(self, job_id: str) -> None:
        try:
            self._send("micro_batch_lowered", self.store.get(job_id))
        except KeyError:
            pass  # deleted meanwhile

    def record_failure(self, job_id: str, message: str) -> None:
        try:
            self.store.update(job_id, notify_error=message)
        except KeyError:
            pass

    def _send(self, event: str, job: Job) -> None:
        stats = self.views.metrics(job.job_id).stats
        data = {**self.views.summary(job), "final_loss": stats.last_loss,
                "best_loss": stats.best_loss, "best_eval_loss": stats.best_eval_loss}
        restricted = self.users.enabled and not _is_admin(self.users, job.owner)
        self.notifier.notify(event, data, job.config.notify_url or None, restricted)


def _is_admin(users: Users, name: str) -> bool:
    try:
        return users.get(name).is_admin
    except NotYourJob:  # an owner no longer in the users file: a plain user
        return False
