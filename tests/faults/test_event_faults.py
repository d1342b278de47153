"""Events under a SIGKILLed worker: one event per change that happened, none for one that didn't."""

from __future__ import annotations

import asyncio
import signal

from ..conftest import wait_until
from .conftest import Counts, Workers, producer, report

FAST = {"AQUEUE_HEARTBEAT_INTERVAL": "0.5", "AQUEUE_DEAD_WORKER_AFTER": "2", "AQUEUE_EVENTS": "1"}


async def test_events_under_a_sigkilled_worker(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    quick = [f"q{i}" for i in range(5)]
    slow = [f"s{i}" for i in range(10)]
    first = workers.start("-c", "20", **FAST)
    async with producer(redis_url, prefix, events=True) as app:
        mark = app.tasks["faults.mark"]
        quick_handles = [await mark.enqueue(k, 0.0) for k in quick]
        await asyncio.wait_for(asyncio.gather(*(h.get() for h in quick_handles)), 30)
        slow_handles = [await mark.enqueue(k, 3.0) for k in slow]
        await wait_until(lambda: counts.started(slow) == [1] * 10, 30)

        first.signal(signal.SIGKILL)
        first.wait()
        second = workers.start("-c", "20", **FAST)
        assert (
            await asyncio.wait_for(asyncio.gather(*(h.get() for h in slow_handles)), 60) == [2] * 10
        )
        assert counts.started(slow) == [2] * 10 and counts.done(slow) == [1] * 10
        second.signal(signal.SIGTERM)
        assert second.wait() == 0

        events = [ev async for ev in app.events(since="0", follow=False)]

    online = [ev.worker for ev in events if ev.state == "worker_online"]
    offline = [ev.worker for ev in events if ev.state == "worker_offline"]
    assert len(online) == 2 and len(set(online)) == 2
    killed, survivor = online
    # The killed worker never said goodbye: the survivor reported it lost when it
    # took over its work; the survivor said goodbye itself.
    assert offline == [killed, survivor]
    [lost] = [ev for ev in events if ev.state == "worker_offline" and ev.worker == killed]
    assert lost.error_type == "WorkerLost"

    def of(handle_id: str) -> list[tuple[str, int, str]]:
        return [(ev.state, ev.attempt, ev.worker) for ev in events if ev.task_id == handle_id]

    for h in quick_handles:
        assert of(h.id) == [("queued", 0, ""), ("started", 1, killed), ("succeeded", 1, killed)]
    for h in slow_handles:
        # The interrupted run started and never ended: no outcome event for it.
        assert of(h.id) == [
            ("queued", 0, ""),
            ("started", 1, killed),
            ("started", 2, survivor),
            ("succeeded", 2, survivor),
        ]
    task_events = [ev for ev in events if ev.task_id]
    report(
        "events_sigkill",
        tasks=15,
        events=len(task_events),
        started_events=sum(ev.state == "started" for ev in task_events),
        runs_counted=sum(counts.started(quick + slow)),
        outcome_events=sum(ev.state == "succeeded" for ev in task_events),
        completions_counted=sum(counts.done(quick + slow)),
    )
