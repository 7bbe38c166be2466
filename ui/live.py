"""Live views: a view (the job view, the System tab) is one stream per browser tab, a generator
that yields when something it shows changed and otherwise waits on the engine's `Changes`,
costing the console nothing. A newer stream of the same view in the same tab (another job
selected, the tab shown again) ends the older one; leaving the tab ends it; and one user keeps at
most MAX_STREAMS_PER_USER streams, so open tabs can never take the queue from everyone else.

Events of one tab can reach the console out of order (a tab shown and a job selected in the same
instant are two requests), so the browser numbers them (`numbered`) and a begin or end older than
one already seen for that view is ignored: the view follows what was asked last, not what arrived
last."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from engine.console.records.changes import Changes

MAX_STREAMS_PER_USER = int(os.environ.get("TRAINDECK_LIVE_VIEWS_PER_USER", "8"))
MIN_INTERVAL_S = 1.0
# The share of one core that all live views together may spend drawing and sending: with many
# open views each is drawn less often, so watching a job never takes its CPU.
CPU_SHARE = float(os.environ.get("TRAINDECK_LIVE_VIEWS_CPU_SHARE", "0.05"))
MAX_INTERVAL_S = 10.0  # however many views are open, each is drawn at least this often
ORDERS_KEPT = 10_000  # tabs whose newest event number is remembered (oldest forgotten first)
ENDED_FOR_OTHERS = ("Live updates of this view stopped: more than "
                    f"{MAX_STREAMS_PER_USER} live views are open for your account. Select the "
                    "job again to follow it here.")


def session_of(request) -> str:
    """The browser tab a request comes from (Gradio's session hash)."""
    return getattr(request, "session_hash", None) or ""


def numbered(inputs_before: int) -> str:
    """Browser code for an event's `js=`: passes on the event's first `inputs_before` inputs and
    adds the tab's next event number as the last (its input is a hidden `gr.Number`)."""
    return (f"(...values) => [...values.slice(0, {inputs_before}), "
            "(window.traindeckViewEvents = (window.traindeckViewEvents || 0) + 1)]")


def event_number() -> gr.Number:
    """The hidden input that carries an event's number from `numbered`."""
    return gr.Number(visible=False)


def _timed(render: Callable[[], Any]) -> tuple[Any, float]:
    started = time.thread_time()
    drawing = render()
    return drawing, time.thread_time() - started


@dataclass(frozen=True)
class Stream:
    number: int
    session: str
    view: str
    user: str

    @property
    def key(self) -> str:
        return f"live:{self.session}:{self.view}"


class LiveStreams:
    def __init__(self, changes: Changes, per_user: int = MAX_STREAMS_PER_USER,
                 cpu_share: float = CPU_SHARE):
        self.changes = changes
        self.per_user = per_user
        self.cpu_share = cpu_share
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._current: OrderedDict[tuple[str, str], Stream] = OrderedDict()  # oldest first
        self._evicted: set[int] = set()  # ended to keep their user within the limit
        self._orders: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _in_order(self, session: str, view: str, order: float | None) -> bool:
        """Whether an event numbered `order` is newer than every one seen for this view (an
        event the browser did not number is taken as it comes). Called with the lock held."""
        if order is None:
            return True
        key = (session, view)
        if key in self._orders and order <= self._orders[key]:
            return False
        self._orders[key] = order
        self._orders.move_to_end(key)
        while len(self._orders) > ORDERS_KEPT:
            self._orders.popitem(last=False)
        return True

    def begin(self, session: str, view: str, user: str, order: float | None = None) -> Stream:
        """A new stream of the view, replacing the tab's current one; an event older than one
        already seen gets a stream that is over before it starts."""
        stream = Stream(next(self._numbers), session, view, user)
        with self._lock:
            if not self._in_order(session, view, order):
                return stream
            ended = [self._current.pop((session, view), None)]
            self._current[(session, view)] = stream
            mine = [s for s in self._current.values() if s.user == user]
            for oldest in mine[:max(0, len(mine) - self.per_user)]:
                ended.append(self._current.pop((oldest.session, oldest.view)))
                self._evicted.add(oldest.number)
        self.changes.bump(*(s.key for s in ended if s is not None))
        return stream

    def end(self, session: str, view: str, order: float | None = None) -> None:
        with self._lock:
            if not self._in_order(session, view, order):
                return
            stream = self._current.pop((session, view), None)
        if stream is not None:
            self.changes.bump(stream.key)

    def is_current(self, stream: Stream) -> bool:
        with self._lock:
            return self._current.get((stream.session, stream.view)) == stream

    def count(self) -> int:
        with self._lock:
            return len(self._current)

    def pause_s(self, drawing_cost_s: float, min_interval_s: float = MIN_INTERVAL_S) -> float:
        """Time between two drawings of one view: at least `min_interval_s`, and long enough
        that all open views drawing at the cost of this one stay within `cpu_share`; at most
        MAX_INTERVAL_S."""
        budgeted = drawing_cost_s * self.count() / self.cpu_share
        return max(min_interval_s, min(budgeted, MAX_INTERVAL_S))

    async def follow(self, stream: Stream, watched: Callable[[], list[str]],
                     render: Callable[[], Any], heartbeat_s: Callable[[], float],
                     ended: Callable[[], Any] | None = None,
                     min_interval_s: float = MIN_INTERVAL_S) -> AsyncIterator[Any]:
        """Yield `render()` (run in a worker thread) now and whenever a key of `watched()`
        changes, or `heartbeat_s()` passes with nothing new (elapsed times move on), until a
        newer stream of the view replaces this one; changes closer together than
        `min_interval_s` are drawn together. `ended()` is yielded if it was ended to keep its
        user within the limit."""
        loop = asyncio.get_running_loop()
        try:
            while self.is_current(stream):
                keys = [stream.key, *watched()]
                seen = self.changes.versions(keys)
                drawn_at = loop.time()
                drawing, cpu_s = await asyncio.to_thread(_timed, render)
                if not self.is_current(stream):
                    break  # replaced while drawing: the newer stream's view must not be overdrawn
                sent_at = loop.time()
                if drawing != {}:  # nothing new: Gradio would take {} for the value of one output
                    yield drawing
                # Resumed once the drawing was encoded and queued for the tab. Its cost: the CPU
                # time of drawing (wall time would count waiting for other views' drawings),
                # and the encoding.
                pause_s = self.pause_s(cpu_s + loop.time() - sent_at, min_interval_s)
                await self.changes.wait(seen, heartbeat_s())
                # A job logs many steps a second: one drawing a second shows them all. A
                # replaced stream stops waiting at once.
                await self.changes.wait({stream.key: seen[stream.key]},
                                        max(0.0, drawn_at + pause_s - loop.time()))
            with self._lock:
                evicted = stream.number in self._evicted
            if evicted and ended is not None:
                yield ended()
        finally:
            with self._lock:
                self._evicted.discard(stream.number)
                if self._current.get((stream.session, stream.view)) == stream:
                    del self._current[(stream.session, stream.view)]
