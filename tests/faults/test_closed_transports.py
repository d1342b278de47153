"""A connection whose transport closed under it is a lost connection, not a crash.

Under uvloop (what ``aqueue worker`` runs on) redis-py's send on a transport the
server closed while redis-py still held it (a connection killed during its
handshake, for instance) raised the loop's RuntimeError, which no retry took
and which stopped a worker's heartbeat loop; on Cluster, a connection closed by
another task mid-send raised AttributeError and stopped the finish loop. Both
are ConnectionError now, which redis-py's retry sends again on a fresh
connection.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

import aqueue


def test_a_send_on_a_closed_transport_is_a_lost_connection_and_is_sent_again(
    redis_url: str, prefix: str
) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with aqueue.App(redis_url, prefix=prefix) as app:
            client = app.client.broker.client
            pool = client.connection_pool
            conn = pool.make_connection()
            await conn.connect()
            conn._writer.transport.abort()
            await asyncio.sleep(0.01)
            with pytest.raises(redis.exceptions.ConnectionError, match="connection lost"):
                await conn.send_packed_command(conn.pack_command("PING"))
            # The same through the client: its pooled connection's transport is
            # closed under it, and the command goes through on a new one.
            assert await client.set(f"{prefix}:k", 1)
            held = await pool.get_connection()
            held._writer.transport.abort()
            await pool.release(held)
            await asyncio.sleep(0.01)
            assert await client.set(f"{prefix}:k", 2)
            assert await client.get(f"{prefix}:k") == b"2"

    uvloop.run(main())
