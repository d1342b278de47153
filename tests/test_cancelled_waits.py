"""Cancelling many waiting ``get()`` calls: every one ends cancelled, none is left waiting.

After a round of ``get(timeout=...)`` calls that expired, connections of the
pool had been dropped mid-reply; a cancellation landing while redis-py
reconnected was swallowed and the waiter went on waiting for ever.
"""

from __future__ import annotations

import asyncio

import pytest

import aqueue

WAITERS = 15_000


async def test_cancelled_gets_after_expired_timeouts_never_hang(app: aqueue.App) -> None:
    @app.task
    async def never_run(n: int) -> int:
        return n

    # No worker: every task waits in its queue for the whole test.
    handles = await never_run.enqueue_many([(i,) for i in range(WAITERS)])
    expired = await asyncio.gather(*(h.get(timeout=0.5) for h in handles), return_exceptions=True)
    assert all(isinstance(e, aqueue.ResultTimeout) for e in expired)

    for pause in (0.05, 0.3, 0.6):
        waits = [asyncio.create_task(h.get()) for h in handles]
        await asyncio.sleep(pause)
        for wait in waits:
            wait.cancel()
        done, pending = await asyncio.wait(waits, timeout=30)
        assert not pending, f"{len(pending)} get() still waiting after cancel (pause {pause}s)"
        swallowed = [w for w in done if not w.cancelled()]
        assert not swallowed, [w.exception() or w.result() for w in swallowed[:3]]
    # The waiter keeps no registration for the cancelled calls.
    assert not app.client.waiter._waiters
    with pytest.raises(aqueue.ResultTimeout):
        await handles[0].get(timeout=0.2)
