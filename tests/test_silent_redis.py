"""A Redis that accepts connections and never answers: callers get an error, never a hang.

Every client aqueue makes comes from one factory with a socket timeout; the
private loop behind ``task.delay()`` once built its own client without one,
and with redis-py 5 (which has no default socket timeout) ``delay()`` then
blocked its thread for ever.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

import aqueue


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener on a free port that accepts connections and reads nothing back."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_delay_to_a_silent_redis_raises_instead_of_hanging(silent_server: int) -> None:
    app = aqueue.App(f"redis://127.0.0.1:{silent_server}/0", connect_timeout=1)

    @app.task
    async def nap() -> None:
        return None

    outcome: list[BaseException | str] = []

    def call() -> None:
        try:
            nap.delay()
            outcome.append("enqueued")
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    # A generous bound, not a timing claim: the socket timeout is a few seconds.
    caller.join(60)
    try:
        assert not caller.is_alive(), "task.delay() was still blocked after 60 s"
        assert len(outcome) == 1 and isinstance(outcome[0], aqueue.ConnectionFailed), outcome
        assert "Redis" in str(outcome[0])
    finally:
        app.close_sync()


async def test_enqueue_to_a_silent_redis_raises_instead_of_hanging(silent_server: int) -> None:
    app = aqueue.App(f"redis://127.0.0.1:{silent_server}/0", connect_timeout=1)

    @app.task
    async def nap() -> None:
        return None

    with pytest.raises(aqueue.ConnectionFailed):
        await nap.enqueue()
    await app.close()


async def test_the_delay_loop_has_the_apps_timeouts(redis_url: str) -> None:
    """Both clients come from one factory: redis-py's own defaults never decide."""
    app = aqueue.App(redis_url, connect_timeout=1.5)
    runner = app.client.sync()

    async def sync_side() -> dict[str, object]:
        return dict(runner.client.broker.client.connection_pool.connection_kwargs)

    try:
        loop_side = dict(app.client.broker.client.connection_pool.connection_kwargs)
        thread_side = runner.call(sync_side())
        for option in ("socket_timeout", "socket_connect_timeout", "socket_keepalive"):
            assert option in loop_side, option
            assert thread_side.get(option) == loop_side[option], option
    finally:
        app.close_sync()
        await app.close()
