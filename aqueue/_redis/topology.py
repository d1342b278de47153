"""Where a client's commands go: described for banners and ``inspect``, and
written back as settings for a client of its own (``task.delay()`` with an
injected client)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from ..core.config import Settings
from ..core.urls import mask_url
from .connection import is_cluster

__all__ = ["describe_topology", "placement", "settings_for"]


async def describe_topology(client: Any) -> str:
    """Where the client's commands go, without secrets: the server, the
    Sentinel service and its current master, or the cluster's nodes."""
    if is_cluster(client):
        await client.initialize()
        masters = sorted(f"{n.host}:{n.port}" for n in client.get_primaries())
        replicas = sorted(f"{n.host}:{n.port}" for n in client.get_replicas())
        return f"cluster: masters {', '.join(masters)}; replicas {', '.join(replicas) or 'none'}"
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        manager = pool.sentinel_manager
        host, port = await manager.discover_master(pool.service_name)
        sentinels = ",".join(
            f"{s.connection_pool.connection_kwargs.get('host')}:"
            f"{s.connection_pool.connection_kwargs.get('port')}"
            for s in manager.sentinels
        )
        db = pool.connection_kwargs.get("db", 0) or 0
        return (
            f"sentinel service {pool.service_name!r} via {sentinels}: master {host}:{port}, db {db}"
        )
    if pool is None:
        return repr(client)
    return mask_url(_standalone_url(pool.connection_kwargs, pool.connection_class))


async def placement(client: Any, key: str) -> tuple[int, str] | None:
    """A cluster key's slot and the master serving it (None off a cluster)."""
    if not is_cluster(client):
        return None
    await client.initialize()
    slot = int(client.keyslot(key))
    node = client.nodes_manager.get_node_from_slot(slot)
    return slot, f"{node.host}:{node.port}"


def _userinfo(kwargs: dict[str, Any]) -> str:
    username, password = kwargs.get("username"), kwargs.get("password")
    if password is None:
        return f"{quote(username, safe='')}@" if username else ""
    return f"{quote(username or '', safe='')}:{quote(password, safe='')}@"


def _standalone_url(kwargs: dict[str, Any], connection_class: type) -> str:
    db = kwargs.get("db", 0) or 0
    if "path" in kwargs:
        return f"unix://{_userinfo(kwargs)}{kwargs['path']}?db={db}"
    scheme = "rediss" if issubclass(connection_class, SSLConnection) else "redis"
    host = kwargs.get("host", "localhost")
    return f"{scheme}://{_userinfo(kwargs)}{host}:{kwargs.get('port', 6379)}/{db}"


def settings_for(client: Any, settings: Settings) -> Settings | None:
    """Settings that reach the same Redis as an injected ``client`` does.

    A client belongs to the event loop it was first used on; ``task.delay()``
    runs on a loop of its own, so it makes a client of its own from these.
    None when the client's target can't be written as a URL.
    """
    if is_cluster(client):
        kwargs = client.connection_kwargs
        hosts = ",".join(f"{n.host}:{n.port}" for n in client.startup_nodes)
        scheme = "rediss+cluster" if kwargs.get("ssl") else "redis+cluster"
        return settings.replace(redis_url=f"{scheme}://{_userinfo(kwargs)}{hosts}")
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool):
        manager = pool.sentinel_manager
        sentinels = [s.connection_pool.connection_kwargs for s in manager.sentinels]
        hosts = ",".join(f"{k.get('host')}:{k.get('port')}" for k in sentinels)
        ssl = issubclass(pool.connection_class, SSLConnection)
        scheme = "rediss+sentinel" if ssl else "redis+sentinel"
        db = pool.connection_kwargs.get("db", 0) or 0
        url = f"{scheme}://{_userinfo(pool.connection_kwargs)}{hosts}/{pool.service_name}/{db}"
        password = manager.sentinel_kwargs.get("password")
        return settings.replace(redis_url=url, sentinel_password=password)
    if isinstance(pool, aioredis.ConnectionPool):
        return settings.replace(
            redis_url=_standalone_url(pool.connection_kwargs, pool.connection_class)
        )
    return None
