"""The watchdog: a worker's leases and heartbeat outlive a blocked event loop.

An ``async def`` task that blocks (``time.sleep(12)``, a CPU-bound loop, a
blocking client) stops the worker's event loop, and with it the heartbeat
and lease renewal that run on that loop. Other workers then take the
blocked worker for dead and run its healthy tasks a second time.

:class:`LoopWatchdog` is a small thread. Every quarter second it asks the
worker's loop to answer; when the loop has not answered for a heartbeat
interval, it renews the leases of every task the worker holds and the
worker's heartbeat itself (the same script the heartbeat uses) from an event
loop and a Redis connection of its own, made then, and logs once which task
blocked the loop. A loop blocked for longer than five visibility timeouts
(at least a minute) is taken for hung: renewal stops and other workers
take its tasks over. It only keeps leases alive: verdicts (lost, aborted) are
left to the worker's own heartbeat once its loop runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from .._redis.broker import Broker
from .._redis.connection import REDIS_ERRORS, connect
from ..core.config import Settings
from .running import Inflight

__all__ = ["LoopWatchdog"]

# Everything a worker says goes to one logger, which users filter on.
logger = logging.getLogger("aqueue.worker")

#: How often the watchdog looks at the worker's event loop.
PROBE_INTERVAL = 0.25


class LoopWatchdog:
    """Keeps a worker's leases alive from a thread while its event loop is blocked."""

    def __init__(
        self, settings: Settings, consumer: str, queues: list[str], inflight: Inflight
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.queues = queues
        self.inflight = inflight
        #: Longest the worker's loop went without answering (seconds), for tests and logs.
        self.longest_block = 0.0
        #: How many times the watchdog renewed leases for a blocked loop.
        self.renewals = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._asked: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching the running event loop (call from that loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main, name="aqueue-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it ends at once, or after a renewal under way; nothing waits)."""
        self._stop.set()

    # -- in the worker's loop -----------------------------------------------------------

    def _answer(self) -> None:
        self._asked = None

    # -- in the watchdog's thread -----------------------------------------------------

    def _main(self) -> None:
        # Probing needs no event loop of the thread's own: it and the Redis client
        # are made when the worker's loop is first found blocked (in most workers,
        # never).
        runner: asyncio.Runner | None = None
        renewing: Broker | None = None
        settings = self.settings
        threshold = settings.heartbeat_interval
        last_renewal = 0.0
        blocker: str | None = None
        # A loop blocked for good (a deadlock) must not hold its tasks for ever.
        cover = max(60.0, 5 * settings.visibility_timeout)
        gave_up = False
        try:
            while not self._stop.wait(PROBE_INTERVAL):
                loop = self._loop
                if loop is None or loop.is_closed():
                    return
                now = time.monotonic()
                asked = self._asked
                if asked is None:
                    self._asked = now
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(self._answer)
                    if blocker is not None:
                        logger.warning(
                            "the event loop ran again after %.1fs blocked by %s",
                            self.longest_block,
                            blocker,
                        )
                        blocker = None
                    gave_up = False
                    continue
                blocked = now - asked
                self.longest_block = max(self.longest_block, blocked)
                if blocked < threshold:
                    continue
                if blocker is None:
                    blocker = self._blocking_task(loop)
                    logger.warning(
                        "the event loop has been blocked for %.1fs by %s: an async task "
                        "that does not await (time.sleep, CPU-bound work, a blocking client) "
                        "stops every other task of this worker; make it a plain def task or "
                        "use asyncio.to_thread. Its leases and heartbeat are kept alive "
                        "meanwhile, so no other worker runs this worker's tasks again",
                        blocked,
                        blocker,
                    )
                if blocked > cover:
                    if not gave_up:
                        gave_up = True
                        logger.error(
                            "the event loop has been blocked for %.0fs by %s: no longer "
                            "renewing this worker's leases, so other workers take its "
                            "tasks over",
                            blocked,
                            blocker,
                        )
                    continue
                if now - last_renewal >= settings.heartbeat_interval:
                    last_renewal = now
                    if runner is None:
                        runner = asyncio.Runner()
                    if renewing is None:
                        renewing = runner.run(self._open())
                    runner.run(self._renew(renewing))
        except Exception:  # the worker's own heartbeat goes on without the watchdog
            logger.debug("the watchdog stopped", exc_info=True)
        finally:
            if runner is not None:
                if renewing is not None:
                    with contextlib.suppress(Exception):
                        runner.run(self._close(renewing))
                runner.close()

    async def _open(self) -> Broker:
        """The watchdog's own broker, on its own connection (its thread's loop)."""
        return Broker(connect(self.settings, max_connections=2), self.settings)

    async def _close(self, broker: Broker) -> None:
        await broker.close()
        with contextlib.suppress(Exception):
            await broker.client.aclose()

    def _held(self) -> dict[str, list[tuple[str, str]]]:
        """(entry, task id) of every job held, by queue; read while the loop is stopped."""
        by_queue: dict[str, list[tuple[str, str]]] = {q: [] for q in self.queues}
        for _ in range(3):  # the loop may run again under us and change the map
            try:
                for entry, running in list(self.inflight.by_entry.items()):
                    job = running.job
                    by_queue.setdefault(job.delivery.queue, []).append((entry, job.envelope.id))
                return by_queue
            except RuntimeError:
                by_queue = {q: [] for q in self.queues}
        return by_queue

    async def _renew(self, broker: Broker) -> None:
        try:
            for queue, pairs in self._held().items():
                await broker.renew(queue, self.consumer, pairs)
            self.renewals += 1
        except REDIS_ERRORS as exc:
            logger.debug("the watchdog could not renew leases: %s", exc)

    def _blocking_task(self, loop: asyncio.AbstractEventLoop) -> str:
        """Which of the worker's tasks holds the loop (its name and id), if it is one."""
        current = asyncio.current_task(loop)
        if current is not None:
            with contextlib.suppress(RuntimeError):
                for running in list(self.inflight.by_entry.values()):
                    if running.task is current:
                        job = running.job
                        return f"{job.display_name}[{job.envelope.id}]"
            return f"the worker's own {current.get_name()!r}"
        return "code outside any task"
