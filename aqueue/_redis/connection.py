"""The one connection factory: every Redis client aqueue makes comes from here.

The App's client, the private loop behind ``task.delay()`` and the CLI all
call :func:`connect`, so timeouts, keepalive and retries are the same
everywhere. :class:`DirectLine` is aqueue's short path for its hot commands.
"""

# Over 400 lines: the one client factory and the direct path (with its bounded set of
# connections) share the error tuples and the master lookup; split them apart next.

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from ..core.config import Settings
from ..core.urls import RedisTarget, parse_redis_url

__all__ = [
    "ANY_REDIS_ERROR",
    "FAILOVER_ERRORS",
    "REDIS_ERRORS",
    "RETRYABLE",
    "DirectLine",
    "FailoverInProgress",
    "NotReplicated",
    "as_failover",
    "connect",
    "is_cluster",
    "is_out_of_memory",
    "packed_head",
]


class FailoverInProgress(redis.exceptions.ConnectionError):
    """Redis ended a command because its role changed under it (``UNBLOCKED``):
    a blocked read on a master that was just demoted. Nothing was read."""


class NotReplicated(redis.exceptions.ConnectionError):
    """A change was made on the master but did not reach the replicas that
    ``replicas_ack`` asks for in time: it is not acknowledged."""


logger = logging.getLogger(__name__)

#: How often the direct path asks the sentinels where the master is.
MASTER_CHECK_INTERVAL = 1.0

#: Replies of a Redis in the middle of a failover or a slot move. The command
#: did not take effect; the client re-resolves the master (Sentinel) or the
#: slot map (Cluster) on its next try.
FAILOVER_ERRORS = (
    redis.exceptions.ReadOnlyError,  # READONLY: a demoted master
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN, and MASTERDOWN (a subclass)
    redis.exceptions.TryAgainError,  # TRYAGAIN: a multi-key command during a slot move
    redis.exceptions.AskError,  # ASK and MOVED (a subclass) past the client's re-routing
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
    FailoverInProgress,  # UNBLOCKED
    NotReplicated,  # replicas_ack: the change may not survive a failover
)
#: What a lost, unreachable or failing-over Redis raises: the operation did
#: not take effect (or its reply was lost with the connection).
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    *FAILOVER_ERRORS,
)
#: Anything Redis may answer with besides a value.
ANY_REDIS_ERROR = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)
#: What a worker loop rides out with backoff: a Redis still loading its data,
#: and one over ``maxmemory`` with ``noeviction`` (an outage until memory is freed).
RETRYABLE = (*REDIS_ERRORS, redis.exceptions.BusyLoadingError, redis.exceptions.OutOfMemoryError)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether Redis refused a write because it is over ``maxmemory``."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError)


def as_failover(exc: redis.exceptions.ResponseError) -> Exception:
    """An error reply classified: ``UNBLOCKED`` (a role change ended a blocked
    command) becomes :class:`FailoverInProgress`, anything else stays as it is."""
    if str(exc).startswith("UNBLOCKED"):
        return FailoverInProgress(str(exc))
    return exc


#: Seconds a call waits for a free connection when all ``max_connections`` are busy.
POOL_WAIT = 30.0

try:
    from redis.driver_info import DriverInfo
except ImportError:  # pragma: no cover - an older redis-py reads its version once, at import
    _DRIVER: dict[str, Any] = {}
else:
    # What every connection tells Redis about its client (CLIENT SETINFO), given
    # once: left to itself, a redis-py with DriverInfo looks its own version up in
    # the installed package's metadata for every new connection it makes (the
    # METADATA file found and parsed each time, about 1 ms).
    _DRIVER = {"driver_info": DriverInfo(lib_version=redis.__version__)}


def connect(settings: Settings, max_connections: int | None = None) -> aioredis.Redis:
    """A client for ``settings.redis_url`` with aqueue's timeouts and retries.

    ``redis://``, ``rediss://`` and ``unix://`` give a client of one server;
    ``redis+sentinel://`` a client of the service's current master, found
    through the sentinels on every new connection; ``redis+cluster://`` a
    cluster client that routes each command by its key's slot.

    The socket timeout is explicit (older redis-py versions default to none):
    a Redis that accepts connections but never answers must not hang a caller
    for ever. It is longer than the workers' 2 s blocking reads.
    """
    target = parse_redis_url(settings.redis_url)
    if max_connections is None:
        max_connections = settings.max_connections
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": max(settings.connect_timeout, 5.0),
        "socket_keepalive": True,
    }
    if target.kind == "sentinel":
        return _sentinel_master(target, settings, timeouts, max_connections)
    if target.kind == "cluster":
        # A RedisCluster has the command methods aqueue uses; where it differs
        # (pipelines of scripts, pub/sub, the direct path) callers ask is_cluster().
        return cast("aioredis.Redis", _cluster(target, timeouts, max_connections))
    # A blocking pool: past max_connections, a call waits for a connection to
    # come free (up to POOL_WAIT seconds) instead of failing, so a burst of
    # concurrent calls is bounded, not refused.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        health_check_interval=30,
        max_connections=max_connections,
        timeout=POOL_WAIT,
        retry=_connection_retry(),
        **_DRIVER,
        **timeouts,
    )
    pool.connection_class = lost_when_closed(pool.connection_class)
    return aioredis.Redis.from_pool(pool)


def _connection_retry() -> Retry:
    # A pooled connection that Redis or the network dropped while idle fails
    # on its next use; without retries that command fails even though Redis
    # is up. Timeouts are not retried, so an unresponsive Redis still fails
    # within one socket timeout.
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.05),
        2,
        supported_errors=(redis.exceptions.ConnectionError,),
    )


def _sentinel_master(
    target: RedisTarget, settings: Settings, timeouts: dict[str, Any], max_connections: int
) -> aioredis.Redis:
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts),
        sentinel_kwargs={
            **timeouts,
            "password": settings.sentinel_password,
            "ssl": target.tls,
            **_DRIVER,
        },
    )
    # Every new connection asks the sentinels for the master's address, and
    # one that finds its server demoted (READONLY) is dropped, so a failover
    # moves the pool to the new master.
    client: aioredis.Redis = sentinels.master_for(
        target.service_name,
        redis_class=aioredis.Redis,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        health_check_interval=30,
        max_connections=max_connections,
        retry=_connection_retry(),
        **_DRIVER,
        **timeouts,
    )
    pool = client.connection_pool
    pool.connection_class = lost_when_closed(pool.connection_class)
    return client


def _cluster(target: RedisTarget, timeouts: dict[str, Any], max_connections: int) -> Any:
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        max_connections=max_connections,
        # Routing errors (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a lost node)
        # refresh the slot map and try again a few times before failing.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        **_DRIVER,
        **timeouts,
    )
    # Nodes found later are made from connection_kwargs; the first ones exist already.
    lost = lost_when_closed(client.connection_kwargs["connection_class"])
    client.connection_kwargs["connection_class"] = lost
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = lost
    return client


class _LostWhenClosed:
    """A redis-py connection whose send on a transport closed under it (the
    server killed the connection, or another task closed it, as the cluster
    client does to every connection of a node it finds down) raises
    ConnectionError, as any lost connection does.

    redis-py lets these through as the event loop's RuntimeError ("the handler
    is closed") or an AttributeError on the writer it set to None, which its
    own retries don't retry and aqueue's loops would take for a bug; sent
    again on a fresh connection, the command goes through.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except (RuntimeError, AttributeError) as exc:
            raise _as_connection_error(exc) from exc


_LOST_WHEN_CLOSED: dict[type, type] = {}


def lost_when_closed(connection_class: type) -> type:
    """``connection_class`` with :class:`_LostWhenClosed`'s send (made once per class)."""
    if issubclass(connection_class, _LostWhenClosed):
        return connection_class
    made = _LOST_WHEN_CLOSED.get(connection_class)
    if made is None:
        made = type(connection_class.__name__, (_LostWhenClosed, connection_class), {})
        _LOST_WHEN_CLOSED[connection_class] = made
    return made


def is_cluster(client: object) -> bool:
    """True for a Redis Cluster client (one connection pool per node)."""
    return isinstance(client, RedisCluster)


try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    _pack_command = None  # type: ignore[assignment]

#: How often the direct path looks for replies that are overdue (their socket
#: timeout passed), while any is awaited: a reply read times out between its
#: connection's socket timeout and that plus this.
READ_WATCH_INTERVAL = 0.5
_READ_SIZE = 65536


try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - older redis-py: the hiredis default
    _NOT_ENOUGH_DATA = False

_CONNECTION_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _as_connection_error(exc: Exception) -> redis.exceptions.ConnectionError:
    """A connection closed under a write (killed by the server) can surface as the
    event loop's RuntimeError about a closed transport: it is a lost connection."""
    return redis.exceptions.ConnectionError(f"connection lost while sending: {exc}")


async def _send(conn: Any, packed: bytes) -> None:
    """Write one packed command on ``conn``.

    On an open connection the bytes go straight to its stream: redis-py's own
    send wraps every write in ``asyncio.wait_for``, which creates a task per
    command on Python 3.11 (about a fifth of a lone ``enqueue()``'s client
    CPU). A write the kernel takes at once cannot hang; only when it leaves
    bytes queued is the wait bounded by the socket timeout. The reply read
    that follows has its own timeout, as before.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None or getattr(conn, "_reader", None) is None:  # not connected
        await conn.send_packed_command(packed, check_health=False)
        return
    try:
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
    except TimeoutError as exc:  # before OSError, of which it is a kind
        await conn.disconnect(nowait=True)
        raise redis.exceptions.TimeoutError("timed out while sending a command") from exc
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise redis.exceptions.ConnectionError(f"connection lost while sending: {exc}") from exc


def packed_head(count: int, *args: str | bytes | int) -> bytes:
    """The first ``len(args)`` arguments of a command of ``count`` in the protocol's
    bytes, as :meth:`DirectLine.call_packed` takes them: the rest follow, each as
    a bulk string (``$``, its length, CRLF, its bytes, CRLF).

    hiredis formats every argument's length with ``sprintf``, about a tenth of a
    lone ``enqueue()``'s client instructions; a hot command whose first arguments
    never change keeps them packed and adds only the rest.
    """
    values = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % count + b"".join([b"$%d\r\n%b\r\n" % (len(v), v) for v in values])


class DirectLine:
    """aqueue's own short path to Redis for its hot commands.

    redis-py's asyncio client spends about 100 us of CPU per command (pool
    lock, retries, observability hooks, a timeout wrapper); aqueue's scripts
    and record reads go over a few connections of its own instead, made by the
    client's pool (so URL, TLS, password and ACL user all apply) and packed by
    hiredis. A connection that fails or is interrupted mid-command is dropped,
    never reused. Replies come as the connection's protocol gives them (RESP2
    or RESP3); Redis Cluster clients and installs without hiredis take the
    client's normal path.

    Behind Sentinel a connection made by the pool knows only how to *find*
    its server: it is connected explicitly through the pool's master lookup
    before its first command (sending on an unconnected one would dial the
    pool's default address, a server that may not be the master at all).
    """

    MAX_IDLE = 8

    def __init__(self, client: aioredis.Redis) -> None:
        pool = getattr(client, "connection_pool", None)
        self.enabled = (
            _pack_command is not None
            and not is_cluster(client)
            and isinstance(pool, aioredis.ConnectionPool)
        )
        self._pool = pool
        self._sentinel = isinstance(pool, SentinelConnectionPool)
        self._idle: list[Any] = []
        #: At most the pool's ``max_connections`` open at once: a burst of
        #: concurrent calls (3,000 aborts) waits its turn instead of opening
        #: a connection each and running out of file descriptors.
        self.limit = int(getattr(pool, "max_connections", 0) or 0) or 200
        self.opened = 0
        self._turns: collections.deque[asyncio.Future[None]] = collections.deque()
        #: Callers woken for their turn that have not taken a connection yet.
        self._woken = 0
        #: Behind Sentinel: the master last named, and when to ask again.
        self._master: tuple[str, int] | None = None
        self._next_master_check = 0.0
        #: Replies being awaited: connection -> (the awaiting task, its deadline);
        #: one timer checks them all (see _read), instead of a timeout per read.
        self._awaited: dict[Any, tuple[asyncio.Task[Any], float]] = {}
        self._overdue: set[Any] = set()
        self._read_watch: asyncio.TimerHandle | None = None
        #: The loop the watch runs on (a watch left on a closed loop never fires).
        self._watch_loop: asyncio.AbstractEventLoop | None = None

    async def _new_connection(self) -> Any:
        assert self._pool is not None
        conn = self._pool.make_connection()
        if self._sentinel:
            try:
                await conn.connect()  # asks the sentinels where the master is
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
        return conn

    async def _follow_master(self) -> None:
        """Ask the sentinels which server is the master (at most once a second);
        when it moved, drop every connection to the old one.

        A demoted master answers READONLY and is left at once; this catches the
        old master that was never demoted (cut off from the sentinels, or not
        yet reconfigured) and still accepts writes that the new master will
        never see.
        """
        assert self._pool is not None
        self._next_master_check = time.monotonic() + MASTER_CHECK_INTERVAL
        try:
            address = tuple(await self._pool.get_master_address())
        except REDIS_ERRORS as exc:
            logger.debug("could not ask the sentinels for the master: %s", exc)
            return
        if self._master is not None and address != self._master:
            logger.warning(
                "Sentinel names %s:%s the master (was %s:%s): leaving the old one",
                *address,
                *self._master,
            )
            idle, self._idle = self._idle, []
            for conn in idle:
                await self._drop(conn)
        self._master = (str(address[0]), int(address[1]))

    async def _checkout(self) -> tuple[Any, bool]:
        """An idle connection (reused: True) or a new one, waiting while ``limit`` are
        open (up to POOL_WAIT seconds, then ConnectionError as redis-py's pool raises)."""
        while not self._idle and self.opened >= self.limit:
            turn = asyncio.get_running_loop().create_future()
            self._turns.append(turn)
            try:
                async with asyncio.timeout(POOL_WAIT):
                    await turn
            except (asyncio.CancelledError, TimeoutError) as exc:
                if turn.done() and not turn.cancelled():
                    self._woken -= 1
                    self._next_turn()  # woken, then cancelled: pass the turn on
                if isinstance(exc, TimeoutError):
                    # As redis-py's blocking pool says it (its callers say what to do).
                    raise redis.exceptions.ConnectionError("No connection available.") from None
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._turns.remove(turn)
            self._woken -= 1
        if self._idle:
            return self._idle.pop(), True
        self.opened += 1
        try:
            return await self._new_connection(), False
        except BaseException:
            self.opened -= 1
            self._next_turn()
            raise

    def _next_turn(self) -> None:
        while self._turns:
            turn = self._turns.popleft()
            if not turn.done():
                turn.set_result(None)
                self._woken += 1
                return

    async def _drop(self, conn: Any) -> None:
        """Close a connection that must not be reused; its place is free again."""
        self.opened -= 1
        self._next_turn()
        await conn.disconnect(nowait=True)

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (raising Redis errors)."""
        assert _pack_command is not None
        return await self.call_packed(_pack_command(args))

    async def call_packed(self, packed: bytes) -> Any:
        """:meth:`call` for a command already in the protocol's bytes (a caller that
        keeps the unchanging part of a hot command packed, see :func:`packed_head`)."""
        assert self._pool is not None
        if self._sentinel and time.monotonic() >= self._next_master_check:
            await self._follow_master()
        if self._idle:  # what _checkout would give, without its await
            conn, reused = self._idle.pop(), True
        else:
            conn, reused = await self._checkout()
        try:
            await _send(conn, packed)
            reply = await self._read(conn)
        except redis.exceptions.ResponseError as exc:
            classified = as_failover(exc)
            if classified is exc and not isinstance(exc, FAILOVER_ERRORS):
                self._release(conn)  # an error reply leaves the connection in sync
                raise
            # The server changed role (or the slot moved): a new connection
            # finds the right one, this one would keep asking the old server.
            await self._drop(conn)
            if classified is not exc:
                raise classified from exc
            raise
        except (*_CONNECTION_LOST, RuntimeError) as exc:
            if not reused:
                await self._drop(conn)
                if isinstance(exc, RuntimeError):
                    raise _as_connection_error(exc) from exc
                raise
            # A reused connection may have gone stale (Redis restarted): try
            # once on a fresh one (in its place), as redis-py's own retry would.
            await conn.disconnect(nowait=True)
            try:
                conn = await self._new_connection()
            except BaseException:
                self.opened -= 1
                self._next_turn()
                raise
            try:
                await _send(conn, packed)
                reply = await self._read(conn)
            except RuntimeError as again:
                await self._drop(conn)
                raise _as_connection_error(again) from again
            except BaseException:
                await self._drop(conn)
                raise
        except BaseException:  # cancelled mid-command: the reply is still on its way
            await self._drop(conn)
            raise
        self._release(conn)
        return reply

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send several commands on one connection and read their replies in order
        (a pipeline without redis-py's per-command cost). Raises the first error
        reply once every reply is read. The commands must be safe to repeat: a
        reused connection found lost is tried once more (see :meth:`call_each`)."""
        return await self.call_each(commands)

    async def call_each(self, commands: Iterable[Sequence[Any]]) -> list[Any]:
        """Send commands one after another on one connection, each as soon as
        ``commands`` yields it, then read their replies in order.

        Redis starts on the first while the caller prepares the next (a lazy
        ``commands``), so the two overlap. Raises the first error reply once
        every reply is read. A reused connection that turns out lost is tried
        once more on a fresh one, every command again, so they must be safe to
        repeat (as a script that skips what it already did is).
        """
        assert _pack_command is not None and self._pool is not None
        if self._sentinel and time.monotonic() >= self._next_master_check:
            await self._follow_master()
        pending = iter(commands)
        sent: list[bytes] = []
        conn, reused = await self._checkout()
        try:
            for command in pending:
                sent.append(_pack_command(tuple(command)))
                await _send(conn, sent[-1])
            replies, error = await self._read_all(conn, len(sent))
        except (*_CONNECTION_LOST, RuntimeError) as exc:
            if not reused:
                await self._drop(conn)
                if isinstance(exc, RuntimeError):
                    raise _as_connection_error(exc) from exc
                raise
            # A reused connection may have gone stale (Redis restarted): every
            # command once more on a fresh one, in its place (as call() does).
            await conn.disconnect(nowait=True)
            try:
                conn = await self._new_connection()
            except BaseException:
                self.opened -= 1
                self._next_turn()
                raise
            try:
                # What the first try had not taken yet.
                sent.extend([_pack_command(tuple(command)) for command in pending])
                await _send(conn, b"".join(sent))
                replies, error = await self._read_all(conn, len(sent))
            except RuntimeError as again:
                await self._drop(conn)
                raise _as_connection_error(again) from again
            except BaseException:
                await self._drop(conn)
                raise
        except BaseException:  # cancelled mid-command: replies are still on their way
            await self._drop(conn)
            raise
        if error is None:
            self._release(conn)
            return replies
        classified = as_failover(error)
        if classified is error and not isinstance(error, FAILOVER_ERRORS):
            self._release(conn)  # error replies leave the connection in sync
            raise error
        await self._drop(conn)
        if classified is not error:
            raise classified from error
        raise error

    async def _read_all(
        self, conn: Any, count: int
    ) -> tuple[list[Any], redis.exceptions.ResponseError | None]:
        """``count`` replies in order, and the first error reply among them."""
        replies: list[Any] = []
        error: redis.exceptions.ResponseError | None = None
        for _ in range(count):
            try:
                replies.append(await self._read(conn))
            except redis.exceptions.ResponseError as exc:
                replies.append(None)
                error = error or exc
        return replies, error

    async def call_replicated(self, replicas: int, timeout_ms: int, *args: Any) -> Any:
        """Send one command followed by ``WAIT replicas timeout_ms`` on the same
        connection (WAIT counts that connection's writes); raise
        :class:`NotReplicated` when fewer replicas confirmed in time."""
        assert _pack_command is not None and self._pool is not None
        wait: tuple[Any, ...] = ("WAIT", replicas, timeout_ms)
        packed = _pack_command(args) + _pack_command(wait)
        conn, _ = await self._checkout()
        try:
            await _send(conn, packed)
            try:
                reply = await self._read(conn)
            finally:
                acked = await self._read(conn)  # keeps the connection in sync
        except BaseException:
            # Simplest safe course in a mode that favours safety over speed: a
            # connection that saw anything unusual is not reused.
            await self._drop(conn)
            raise
        self._release(conn)
        if int(acked) < replicas:
            raise NotReplicated(
                f"only {int(acked)} of {replicas} replicas confirmed the change within "
                f"{timeout_ms} ms"
            )
        return reply

    async def _read(self, conn: Any) -> Any:
        """The next reply on ``conn``, raising an error reply; a read that waits
        longer than the connection's socket timeout raises TimeoutError.

        redis-py's own read enters a timeout context per reply (a timer armed and
        cancelled each time, about a tenth of a lone ``enqueue()``'s client CPU).
        Here the replies being awaited are registered with their deadline, and
        one timer, running only while some are, cancels the overdue ones. Push
        messages (RESP3) go to the connection's handler, as redis-py's read does;
        a connection without a hiredis reader takes redis-py's read.
        """
        parser = conn._parser
        reader = getattr(parser, "_reader", None)
        if reader is None or not getattr(parser, "_connected", False):
            return await conn.read_response()
        push = getattr(parser, "_hiredis_PushNotificationType", None)
        while True:
            reply = reader.gets()
            if reply is _NOT_ENOUGH_DATA:
                reply = await self._wait_reply(conn, parser._stream, reader)
            if push is None or not isinstance(reply, push):
                break
            await parser.handle_push_response(reply)
        if isinstance(reply, Exception):  # an error reply (LOADING is a ConnectionError)
            raise reply
        return reply

    async def _wait_reply(self, conn: Any, stream: asyncio.StreamReader, reader: Any) -> Any:
        """Read from ``conn`` until ``reader`` holds a whole reply, by its deadline."""
        loop = asyncio.get_running_loop()
        # Given the loop, current_task does not look it up again: on Python 3.11 each
        # look is a getpid() system call.
        task = asyncio.current_task(loop)
        assert task is not None
        self._awaited[conn] = (task, loop.time() + (conn.socket_timeout or POOL_WAIT))
        if self._watch_loop is not loop:
            self._watch_loop = loop
            self._read_watch = loop.call_later(READ_WATCH_INTERVAL, self._watch_reads)
        try:
            reply = _NOT_ENOUGH_DATA
            while reply is _NOT_ENOUGH_DATA:
                data = await stream.read(_READ_SIZE)
                if not data:
                    raise redis.exceptions.ConnectionError("Connection closed by server.")
                reader.feed(data)
                reply = reader.gets()
        except asyncio.CancelledError:
            if conn in self._overdue and task.uncancel() == 0:
                raise redis.exceptions.TimeoutError(
                    f"Timeout reading from {conn.host}:{conn.port}"
                ) from None
            raise
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"Error while reading from {conn.host}:{conn.port}: {exc}"
            ) from exc
        finally:
            del self._awaited[conn]
            self._overdue.discard(conn)
        return reply

    def _watch_reads(self) -> None:
        """Cancel the reads past their deadline; look again while any is awaited."""
        now = asyncio.get_running_loop().time()
        for conn, (task, deadline) in self._awaited.items():
            if now >= deadline and conn not in self._overdue:
                self._overdue.add(conn)
                task.cancel()
        self._read_watch = self._watch_loop = None
        if self._awaited:
            self._watch_loop = asyncio.get_running_loop()
            self._read_watch = self._watch_loop.call_later(READ_WATCH_INTERVAL, self._watch_reads)

    def _release(self, conn: Any) -> None:
        stale = self._sentinel and (conn.host, conn.port) != self._master
        waiting = self._turns or self._woken
        if not stale and (len(self._idle) < self.MAX_IDLE or waiting):
            # Kept for the next caller; one waiting for its turn takes it at once.
            self._idle.append(conn)
            self._next_turn()
            return
        extra = [conn]
        if not waiting:  # a burst is over: keep no more than MAX_IDLE open
            while len(self._idle) > self.MAX_IDLE:
                extra.append(self._idle.pop(0))
        self.opened -= len(extra)
        self._next_turn()
        for closing in extra:
            task = asyncio.ensure_future(closing.disconnect())
            task.add_done_callback(lambda t: t.exception())

    async def close(self) -> None:
        if self._read_watch is not None:
            self._read_watch.cancel()
            self._read_watch = self._watch_loop = None
        idle, self._idle = self._idle, []
        self.opened -= len(idle)
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.disconnect()
