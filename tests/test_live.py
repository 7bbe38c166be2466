"""Live views, the logic: the engine's change versions wake a waiting stream from another thread,
a newer stream of a view ends the older one, and one user's open views are capped."""

import asyncio
import threading
import time

from engine.console.records.changes import Changes
from ui.live import LiveStreams


def test_a_bump_from_another_thread_wakes_a_waiting_stream_at_once():
    changes = Changes()

    async def scenario():
        seen = changes.versions(["job:a"])
        threading.Timer(0.05, changes.bump, ["job:a"]).start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        woken = await changes.wait(seen, timeout=10)
        return woken, loop.time() - started

    woken, waited = asyncio.run(scenario())
    assert woken and waited < 2


def test_a_wait_with_nothing_new_times_out_and_an_old_version_returns_at_once():
    changes = Changes()
    changes.bump("job:b")

    async def scenario():
        quiet = await changes.wait(changes.versions(["job:a"]), timeout=0.05)
        stale = await changes.wait({"job:b": 0}, timeout=10)
        return quiet, stale

    assert asyncio.run(scenario()) == (False, True)
    assert changes._waiters == {}  # nobody left registered


def drain(live, stream, watched=(), renders=None):
    """Run a stream until it ends, counting renders; returns what it yielded."""
    renders = renders if renders is not None else []

    async def scenario():
        out = []
        async for item in live.follow(stream, lambda: list(watched),
                                      lambda: renders.append(1) or len(renders),
                                      lambda: 10.0, ended=lambda: "ended", min_interval_s=0):
            out.append(item)
        return out
    return scenario()


async def drawn(renders: list, count: int, timeout: float = 5) -> None:
    """Wait until a stream has drawn `count` times (a busy machine may take a while to run it)."""
    deadline = time.monotonic() + timeout
    while len(renders) < count:
        assert time.monotonic() < deadline, f"waited {timeout} s for drawing {count}"
        await asyncio.sleep(0.01)


def test_a_newer_stream_of_the_same_view_ends_the_older_and_changes_wake_it():
    changes = Changes()
    live = LiveStreams(changes)

    async def scenario():
        first, renders = live.begin("tab-1", "job", "bob"), []
        task = asyncio.create_task(drain(live, first, ["job:a"], renders))
        await drawn(renders, 1)
        changes.bump("job:a")  # a new metrics record: one more render
        await drawn(renders, 2)
        live.begin("tab-1", "job", "bob")  # another job selected in the same tab
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) == [1, 2]  # drawn, redrawn once, then ended without a notice
    assert live.count() == 1


def test_one_users_streams_are_capped_and_the_oldest_says_why_it_stopped():
    changes = Changes()
    live = LiveStreams(changes, per_user=2)

    async def scenario():
        oldest, renders = live.begin("tab-1", "job", "bob"), []
        task = asyncio.create_task(drain(live, oldest, renders=renders))
        await drawn(renders, 1)
        live.begin("tab-2", "job", "bob")
        live.begin("tab-9", "job", "carol")  # another user's views do not count against bob
        live.begin("tab-3", "job", "bob")
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) == [1, "ended"]
    assert live.count() == 3


def sent_while_bumped(render, bumps: int, every_s: float, settle_s: float,
                      min_interval_s: float, each_drawn: bool = False) -> list:
    """What a job view's stream sends while its job changes `bumps` times, `every_s` apart
    (`each_drawn`: each change only once the previous one was drawn, however slow the
    machine)."""
    changes = Changes()
    live = LiveStreams(changes)
    drawn = []

    def counted():
        drawn.append(1)
        return render()

    async def until_drawn(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(drawn) < count:
            assert time.monotonic() < deadline, f"waited 5 s for drawing {count}"
            await asyncio.sleep(0.005)

    async def scenario():
        stream, sent = live.begin("tab-1", "job", "bob"), []

        async def follow():
            async for item in live.follow(stream, lambda: ["job:a"], counted, lambda: 10.0,
                                          min_interval_s=min_interval_s):
                sent.append(item)
        task = asyncio.create_task(follow())
        for bumped in range(bumps):
            await asyncio.sleep(every_s)
            if each_drawn:
                await until_drawn(bumped + 1)
            changes.bump("job:a")
        if each_drawn:
            await until_drawn(bumps + 1)
        await asyncio.sleep(settle_s)
        live.end("tab-1", "job")
        await asyncio.wait_for(task, 5)
        return sent

    return asyncio.run(scenario())


def test_changes_closer_than_the_interval_are_drawn_together():
    renders = []
    # Twenty metrics records in 0.2 s: the first drawing, then one for all twenty.
    assert sent_while_bumped(lambda: renders.append(1) or len(renders), 20, 0.01, 0.7,
                             min_interval_s=0.5) == [1, 2]


def test_a_drawing_with_nothing_new_is_not_sent():
    """A job view sends only what changed; with nothing changed it is {}, which Gradio would
    take for the value of one output (and log a traceback)."""
    drawings = iter([{"header": "job a"}, {}, {"status": "running"}])
    assert sent_while_bumped(lambda: next(drawings), 2, 0.0, 0.1, min_interval_s=0.0,
                             each_drawn=True) == [{"header": "job a"}, {"status": "running"}]


def test_leaving_the_tab_ends_its_stream():
    changes = Changes()
    live = LiveStreams(changes)

    async def scenario():
        stream, renders = live.begin("tab-1", "system", "local"), []
        task = asyncio.create_task(drain(live, stream, renders=renders))
        await drawn(renders, 1)
        live.end("tab-1", "system")
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) == [1]
    assert live.count() == 0


def test_a_view_follows_the_event_made_last_not_the_one_that_arrived_last():
    """Showing the Jobs tab (event 1, the job shown before) and selecting another job (event 2)
    are two requests; when event 1 arrives second it must not replace the stream of event 2."""
    changes = Changes()
    live = LiveStreams(changes)

    async def scenario():
        newest, renders = live.begin("tab-1", "job", "bob", order=2), []
        task = asyncio.create_task(drain(live, newest, renders=renders))
        await drawn(renders, 1)
        late = live.begin("tab-1", "job", "bob", order=1)
        late_drawings = await asyncio.wait_for(drain(live, late), 5)
        live.end("tab-1", "job", order=1)  # a late "tab left" from before the newest showing
        still_current = live.is_current(newest)
        live.end("tab-1", "job", order=3)
        return late_drawings, still_current, await asyncio.wait_for(task, 5)

    late_drawings, still_current, newest_drawings = asyncio.run(scenario())
    assert late_drawings == [] and still_current and newest_drawings == [1]
    assert live.count() == 0


def test_a_stream_replaced_while_it_draws_never_sends_that_drawing():
    changes = Changes()
    live = LiveStreams(changes)
    drawing = threading.Event()
    release = threading.Event()

    def slow_render():
        drawing.set()
        release.wait(5)
        return "old job"

    async def scenario():
        old = live.begin("tab-1", "job", "bob")
        out = []

        async def follow():
            async for item in live.follow(old, lambda: [], slow_render, lambda: 10.0):
                out.append(item)
        task = asyncio.create_task(follow())
        await asyncio.to_thread(drawing.wait, 5)
        live.begin("tab-1", "job", "bob")  # another job selected while the old one draws
        release.set()
        await asyncio.wait_for(task, 5)
        return out

    assert asyncio.run(scenario()) == []


def test_many_open_views_are_drawn_less_often_to_stay_within_their_cpu_share():
    live = LiveStreams(Changes(), per_user=100, cpu_share=0.05)
    live.begin("tab-1", "job", "bob")
    assert live.pause_s(0.01) == 1.0  # one view at 10 ms a drawing: once a second
    assert live.pause_s(10.0) == 10.0  # never less often than every 10 s
    for tab in range(2, 21):
        live.begin(f"tab-{tab}", "job", "bob")
    # twenty views at 10 ms: 0.2 s of drawing per round, 4 s apart to stay within 5 % of a core
    assert abs(live.pause_s(0.01) - 4.0) < 1e-9
