"""Checked by ``mypy --strict`` (see tests/test_typing.py); never imported.

Priorities and limits are typed options of ``@app.task``; the decorated task
keeps its signature.
"""

from __future__ import annotations

from typing import assert_type

import aqueue
from aqueue import AsyncResult

app = aqueue.App("redis://localhost:6379/0")


@app.task(priority=7, rate_limit=("20/s", "tenant:{tenant_id}"), concurrency=(2, "t:{tenant_id}"))
async def sync_tenant(tenant_id: str, since: int) -> int:
    return since


@app.task(rate_limit="100/s", concurrency=5)
async def notify(user_id: int) -> None:
    return None


@app.task(concurrency="five")  # type: ignore[call-overload, untyped-decorator]
async def wrong(x: int) -> None:
    return None


async def use() -> None:
    r = await sync_tenant.enqueue("acme", 3)
    assert_type(r, AsyncResult[int])
    u = await sync_tenant.options(priority=9).enqueue("acme", 4)
    assert_type(u, AsyncResult[int])
    n = await notify.enqueue(1)
    assert_type(n, AsyncResult[None])
