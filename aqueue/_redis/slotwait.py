"""Durable script calls on Redis Cluster: the script, then WAIT, on one connection.

``WAIT`` counts the replicas that have the writes of *its own connection*, so
it must follow the script on the very connection that ran it, on the master
that owns the queue's slot. A cluster client hands out pooled connections
per command, so aqueue borrows one connection of that master for the pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions

from .connection import NotReplicated

__all__ = ["call_replicated_on_slot"]


async def call_replicated_on_slot(
    client: Any,
    key: str,
    replicas: int,
    timeout_ms: int,
    args: Sequence[Any],
    source: str,
) -> Any:
    """Run ``args`` (an EVALSHA) on the master of ``key``'s slot, then ``WAIT``.

    ``source`` is the script, loaded on that master if it does not know it yet.
    Raises :class:`NotReplicated` when fewer than ``replicas`` replicas
    confirmed within ``timeout_ms``. A moved slot refreshes the client's map of
    the cluster and is tried once more on the new owner.
    """
    await client.initialize()  # the map of slots, once (the client loads it lazily)
    for attempt in range(2):
        node = client.get_node_from_key(key)
        try:
            return await _on_node(node, replicas, timeout_ms, args, source)
        except redis.exceptions.AskError:  # MOVED (a subclass) too
            if attempt:
                raise
            await client.nodes_manager.initialize()
    raise AssertionError("unreachable")


async def _on_node(
    node: Any, replicas: int, timeout_ms: int, args: Sequence[Any], source: str
) -> Any:
    conn = node.acquire_connection()
    try:
        reply, acked = await _pair(conn, args, replicas, timeout_ms)
        if isinstance(reply, redis.exceptions.NoScriptError):
            await conn.send_command("SCRIPT", "LOAD", source)
            await conn.read_response()
            reply, acked = await _pair(conn, args, replicas, timeout_ms)
    except BaseException:
        # A connection that saw anything unusual is not reused.
        await conn.disconnect()
        node.release(conn)
        raise
    node.release(conn)
    if isinstance(reply, Exception):
        raise reply
    if int(acked) < replicas:
        raise NotReplicated(
            f"only {int(acked)} of {replicas} replicas confirmed the change within {timeout_ms} ms"
        )
    return reply


async def _pair(conn: Any, args: Sequence[Any], replicas: int, timeout_ms: int) -> Any:
    """Send the command and WAIT together; read both replies (an error reply is returned)."""
    await conn.send_packed_command(conn.pack_commands([list(args), ["WAIT", replicas, timeout_ms]]))
    try:
        reply = await conn.read_response()
    except redis.exceptions.ResponseError as exc:
        reply = exc
    acked = await conn.read_response()  # keeps the connection in sync
    return reply, acked
