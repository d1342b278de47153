"""Ageing a test's keys: what a virtual clock's jump does to Redis' own expiry.

Redis expires keys by its real clock, which a test clock can't move. When a
test moves its clock forward, :func:`age_keys` shortens the time to live of
every key under the test's own prefix by the same amount and deletes those
whose time is up, so unique windows and result TTLs end in virtual time
too. Only :mod:`aqueue.testing` calls it, between worker runs (nothing else
changes those keys meanwhile); it scans, which is fine for a test's handful
of keys and never done in production.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

__all__ = ["age_keys"]

#: Keys read and changed per pipeline.
BATCH = 500


async def age_keys(client: aioredis.Redis, prefix: str, ms: int) -> int:
    """Take ``ms`` off the TTL of every key under ``prefix``; returns how many expired."""
    if ms <= 0:
        return 0
    expired = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= BATCH:
            expired += await _age(client, batch, ms)
            batch = []
    if batch:
        expired += await _age(client, batch, ms)
    return expired


async def _age(client: aioredis.Redis, keys: list[Any], ms: int) -> int:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
        ttls = await pipe.execute()
    expired = 0
    async with client.pipeline(transaction=False) as pipe:
        for key, ttl in zip(keys, ttls, strict=True):
            if ttl is None or ttl < 0:  # no TTL (-1) or gone meanwhile (-2)
                continue
            if ttl <= ms:
                pipe.delete(key)
                expired += 1
            else:
                pipe.pexpire(key, ttl - ms)
        await pipe.execute()
    return expired
