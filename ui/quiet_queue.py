"""Gradio's event queue polls for work every millisecond while idle (two asyncio loops sleeping
1 and 10 ms at a time): about a tenth of a core on a console nobody uses, taken from the trainer
next to it. Here those idle sleeps wait instead until an event is pushed or one finishes (or a
second passes, as a safety net), and everything else in the queue is as Gradio wrote it: its
module's `asyncio` is replaced by a stand-in that differs only in that one sleep."""

from __future__ import annotations

import asyncio

import gradio as gr
from gradio import queueing

SAFETY_WAKE_S = 5.0


class _QuietAsyncio:
    def __init__(self, queue: queueing.Queue):
        self.queue = queue
        self.idle_sleeps = {queue.sleep_when_free, queue.progress_update_sleep_when_free}
        self.changed = asyncio.Event()

    def __getattr__(self, name):
        return getattr(asyncio, name)

    def wake(self) -> None:
        self.changed.set()

    def busy(self) -> bool:
        """Whether an event that reports progress runs (a live view's stream does not: it may
        run for hours, during which the queue must stay as quiet as an idle one)."""
        return any(event.fn.tracks_progress for job in self.queue.active_jobs if job is not None
                   for event in job)

    async def sleep(self, delay, result=None):
        # While events run, progress updates keep Gradio's own pace.
        if delay not in self.idle_sleeps or (
            delay == self.queue.progress_update_sleep_when_free and self.busy()
        ):
            return await asyncio.sleep(delay, result)
        try:
            await asyncio.wait_for(self.changed.wait(), SAFETY_WAKE_S)
        except asyncio.TimeoutError:
            pass
        self.changed.clear()
        return result


def quiet_queue(blocks: gr.Blocks) -> None:
    """Call after `blocks.queue(...)`."""
    queue = blocks._queue
    quiet = _QuietAsyncio(queue)
    queueing.asyncio = quiet
    push, process_events = queue.push, queue.process_events

    async def push_and_wake(*args, **kwargs):
        result = await push(*args, **kwargs)
        quiet.wake()
        return result

    async def process_and_wake(*args, **kwargs):
        try:
            return await process_events(*args, **kwargs)
        finally:
            quiet.wake()  # a slot is free: a waiting event may start now

    queue.push = push_and_wake
    queue.process_events = process_and_wake
