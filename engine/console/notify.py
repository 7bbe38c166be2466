"""Notifications: a webhook POST when a job completes, fails, is cancelled, is paused to make
room for another (preempted), or has its micro-batch lowered after running out of memory. To
the console's URLs (`--notify-url`) and the job's own `notify_url`; as TrainDeck's JSON, or as
the `{"text": ...}` that Slack and Mattermost incoming webhooks take.

One background sender does the posting, each with a timeout and a few retries with growing
waits: a slow or dead endpoint never holds the queue, a status change or a request. A delivery
that failed in the end is logged and recorded on the job (`notify_error`), which its view shows.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from engine.config import ConfigError, shorten, url_problem
from engine.console.users import NotYourJob

log = logging.getLogger("traindeck.notify")
FORMATS = ("json", "slack")
EVENTS = {"completed": "completed", "failed": "failed", "cancelled": "was cancelled",
          "preempted": "was paused to make room for a higher-priority job",
          "micro_batch_lowered": "ran out of memory; its micro-batch was lowered"}


def check_url(url: str, field_name: str = "notify_url") -> str:
    problem = url_problem(url, field_name)
    if problem:
        raise ConfigError(problem)
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead a checked URL to an address that the check refused."""

    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(_NoRedirects)


def reaches_inside(url: str) -> bool:
    """Whether the URL's host is (or resolves to) this machine or a private network: a job's
    notify_url on a shared console must not make the server call into places only it reaches."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # unresolvable: the delivery will fail, and say so
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            return True
    return False


@dataclass
class Delivery:
    job_id: str
    url: str
    body: bytes
    restricted: bool  # a job's own URL on a shared console: never to an inside address
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class Notifier:
    def __init__(self, urls: list[str] | tuple = (), fmt: str = "json",
                 public_url: str | None = None, timeout_s: float = 5.0, retries: int = 3,
                 backoff_s: float | None = None,
                 record_failure: Callable[[str, str], None] = lambda job_id, error: None):
        if fmt not in FORMATS:
            raise ConfigError(f"notify format must be one of {', '.join(FORMATS)}, got "
                              f"{shorten(fmt)}")
        self.urls = [check_url(url, "--notify-url") for url in urls]
        self.fmt, self.public_url = fmt, public_url
        self.timeout_s, self.retries = timeout_s, retries
        # first wait between tries (doubling): TRAINDECK_NOTIFY_BACKOFF_S, else 2 s
        self.backoff_s = backoff_s if backoff_s is not None else float(
            os.environ.get("TRAINDECK_NOTIFY_BACKOFF_S", "2"))
        self.record_failure = record_failure
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=2)
            self._thread = None

    def notify(self, event: str, job: dict[str, Any], job_url: str | None,
               restricted: bool) -> None:
        """Queue the event for the console's URLs and the job's (`job_url`); never blocks."""
        payload = self.payload(event, job)
        body = json.dumps(self.formatted(payload)).encode()
        targets = [(url, False) for url in self.urls]
        if job_url:
            targets.append((job_url, restricted))
        for url, limited in targets:
            try:
                self._queue.put_nowait(Delivery(job["job_id"], url, body, limited))
            except queue.Full:
                log.warning("notification queue full: dropped %s for job %s", event,
                            job["job_id"])

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

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        while delivery.attempts <= self.retries:
            delivery.attempts += 1
            error = self._post(delivery)
            if error is None:
                return
            delivery.errors.append(error)
            if delivery.attempts <= self.retries:
                time.sleep(self.backoff_s * 2 ** (delivery.attempts - 1))
        host = urlsplit(delivery.url).hostname
        message = (f"notification to {host} failed after {delivery.attempts} tries: "
                   f"{delivery.errors[-1]}")
        log.warning("job %s: %s", delivery.job_id, message)
        self.record_failure(delivery.job_id, message)

    def _post(self, delivery: Delivery) -> str | None:
        if delivery.restricted and reaches_inside(delivery.url):
            return "the address is on this machine or a private network, which a job's " \
                   "notify_url may not reach on a shared console"
        request = urllib.request.Request(delivery.url, data=delivery.body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "TrainDeck"})
        try:
            with OPENER.open(request, timeout=self.timeout_s) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{type(reason).__name__}: {reason}"[:200]


def check_job_url(url: str, shared_console: bool, admin: bool) -> None:
    """At submit: on a console with logins, a plain user's job may notify public addresses only
    (checked again at each delivery, as a name may resolve elsewhere by then)."""
    if url and shared_console and not admin and reaches_inside(url):
        raise ConfigError(f"notify_url {shorten(url, 120)}: the address is on this machine or a "
                          f"private network; a job's webhook must be a public address (an admin "
                          f"can set console-wide ones with --notify-url)")


class JobNotifications:
    """Turns what happens to jobs into notifications: listens to status changes (completed,
    failed, cancelled, paused by preemption) and to lowered micro-batches."""

    def __init__(self, notifier: Notifier, store, views, users):
        self.notifier, self.store, self.views, self.users = notifier, store, views, users

    def on_status(self, job, previous: str) -> None:
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

    def _send(self, event: str, job) -> None:
        stats = self.views.metrics(job.job_id).stats
        data = {**self.views.summary(job), "final_loss": stats.last_loss,
                "best_loss": stats.best_loss, "best_eval_loss": stats.best_eval_loss}
        restricted = self.users.enabled and not _is_admin(self.users, job.owner)
        self.notifier.notify(event, data, job.config.notify_url or None, restricted)


def _is_admin(users, name: str) -> bool:
    try:
        return users.get(name).is_admin
    except NotYourJob:  # an owner no longer in the users file: a plain user
        return False
