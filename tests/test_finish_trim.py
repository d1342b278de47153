"""The finish script trims the stream's acknowledged head, and only that.

Entries before the oldest pending one were all delivered and acknowledged;
with nothing pending, every delivered entry was. Undelivered entries and
pending ones (of any consumer) always stay.
"""

from __future__ import annotations

from typing import Any

import aqueue
from aqueue.core.protocol import FinishItem


def _succeeded(deliveries: list[Any]) -> list[FinishItem]:
    return [
        FinishItem(
            d.entry_id,
            d.task_id,
            aqueue.TaskStatus.SUCCEEDED,
            b"\xc0",
            unique=False,
            name="noop",
            attempt=d.attempt,
            ran_ms=1,
        )
        for d in deliveries
    ]


async def test_finish_trims_up_to_the_oldest_pending_entry_of_any_consumer(
    redis_url: str, prefix: str
) -> None:
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="noop")
    async def noop() -> None: ...

    try:
        await noop.enqueue_many([() for _ in range(10)])
        queue = noop.config.queue
        broker = app.broker
        stream = broker.keys(queue).stream
        await broker.ensure_group(queue)

        async def entries() -> list[str]:
            return [e.decode() for e, _ in await broker.client.xrange(stream)]

        everything = await entries()
        other = await broker.fetch(queue, "other", 2)
        mine = await broker.fetch(queue, "mine", 4)
        assert [d.entry_id for d in other + mine] == everything[:6]

        # The other consumer's first entry is the oldest pending one: nothing goes.
        assert await broker.finish(queue, "mine", _succeeded(mine[1:])) == []
        assert await entries() == everything
        # Its first entry finished, the oldest pending is its second one.
        assert await broker.finish(queue, "other", _succeeded(other[:1])) == []
        assert await entries() == everything[1:]
        # Only the head goes: entries acknowledged behind a pending one wait for it.
        assert await broker.finish(queue, "other", _succeeded(other[1:])) == []
        assert await entries() == everything[2:]
        # Nothing pending: every delivered entry goes, the 4 undelivered stay.
        assert await broker.finish(queue, "mine", _succeeded(mine[:1])) == []
        assert await entries() == everything[6:]
        rest = await broker.fetch(queue, "mine", 10)
        assert [d.entry_id for d in rest] == everything[6:]
    finally:
        await app.close()
