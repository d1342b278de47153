"""A virtual clock for tests: "five minutes pass" without waiting five minutes.

:class:`TestClock` replaces the real clock of one App, in Python (enqueue
times, ETAs, expiry) and in the Lua scripts (a broker given a clock loads
variants of its scripts that take "now" from the caller instead of Redis'
``TIME``). Time stands still until the test moves it:
``await clock.advance(seconds=300)`` (or a ``timedelta``) walks through
everything that falls due on the way, in order: each delayed task, retry and
periodic tick (cron in its time zone) runs at its own moment, with a
:class:`~aqueue.testing.worker.TestWorker`, before time moves on. Keys'
time to live in Redis (unique windows, results) shrink by the same amount.

Only an App the test hands to a ``TestClock`` reads it; there is no global
clock, and production code never installs one.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .._redis.aging import age_keys
from ..core.errors import AqueueError
from ..periodic import Scheduler, TickOutcome
from .worker import FinishedTask, TestWorker

if TYPE_CHECKING:
    from ..app import App

__all__ = ["ClockError", "TestClock"]

#: Steps one ``advance()`` may take (each due moment on the way is a step, and a
#: step with work is a worker run of about half a second) before it suspects a
#: schedule or a task that re-enqueues itself for ever.
MAX_STEPS = 1000


class ClockError(AqueueError, ValueError):
    """A virtual clock was asked to do what time can't (run backwards, ...)."""


class TestClock:
    """The virtual time of one App: stands still until :meth:`advance` moves it.

    ``start`` is where time begins (epoch seconds or an aware datetime; the
    real time, down to the second, by default). Calling the clock gives epoch seconds, as
    ``time.time()`` does.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        app: App,
        worker: TestWorker | None = None,
        *,
        start: float | datetime | None = None,
    ) -> None:
        self.app = app
        self.worker = worker if worker is not None else TestWorker(app)
        # Whole seconds by default: the scripts keep milliseconds, and due times
        # read back from them then subtract to exact figures in a test.
        self._now = float(int(time.time())) if start is None else _seconds(start)
        self._scheduler = Scheduler(app, clock=self)
        self._ticks_seen = False
        #: Every periodic tick claimed while the clock moved, oldest first.
        self.ticks: list[TickOutcome] = []

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"<TestClock {self.now().isoformat()}>"

    def now(self) -> datetime:
        """The virtual time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._now, UTC)

    # -- installing ------------------------------------------------------------------

    def install(self) -> TestClock:
        """Make the App read this clock (Python and Lua scripts alike)."""
        self.app.client.use_test_clock(self)
        return self

    def uninstall(self) -> None:
        """Give the App its real clock back."""
        if self.app.client.test_clock is self:
            self.app.client.use_test_clock(None)

    def __enter__(self) -> TestClock:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # -- moving ------------------------------------------------------------------------

    async def advance(
        self,
        delta: timedelta | float | None = None,
        *,
        seconds: float = 0.0,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
        weeks: float = 0.0,
    ) -> list[FinishedTask]:
        """Move time forward and run what falls due on the way; returns what ran.

        ``await clock.advance(seconds=300)``, ``advance(timedelta(days=7))``.
        Each due moment on the way (a delayed task, a retry, a periodic tick)
        is stopped at in order, and what is due then runs until idle, so a
        task that enqueues a delayed follow-up sees it run at its own time.
        """
        if isinstance(delta, timedelta):
            step = delta.total_seconds()
        elif delta is None:
            step = 0.0
        elif isinstance(delta, int | float) and not isinstance(delta, bool):
            step = float(delta)
        else:
            raise ClockError(f"advance() takes a timedelta or seconds, got {type(delta).__name__}")
        step += seconds + 60 * minutes + 3600 * hours + 86400 * days + 604800 * weeks
        if not math.isfinite(step) or step < 0:
            raise ClockError(
                f"advance() moves time forward only: got {step!r} seconds. Start a new "
                "TestClock(start=...) to begin at an earlier time"
            )
        return await self._walk_to(self._now + step)

    async def advance_to(self, when: datetime | float) -> list[FinishedTask]:
        """Move time forward to ``when`` (an aware datetime or epoch seconds)."""
        target = _seconds(when)
        if target < self._now:
            raise ClockError(
                f"advance_to({when!r}) is in the past of the test clock ({self.now().isoformat()})"
            )
        return await self._walk_to(target)

    async def run_due(self) -> list[FinishedTask]:
        """Run what is due now, without moving time."""
        await self._note_first_ticks()
        return await self._run_due()

    async def _walk_to(self, target: float) -> list[FinishedTask]:
        await self._note_first_ticks()
        ran = await self._run_due()
        for _ in range(MAX_STEPS):
            moment = await self._next_moment()
            if moment is None or moment > target:
                break
            await self._move_to(moment)
            ran += await self._run_due()
        else:
            raise ClockError(
                f"advance() stopped after {MAX_STEPS} due moments at {self.now().isoformat()}: "
                "a task that enqueues itself with a delay for ever, or a schedule that ticks "
                "more often than the test can follow? Advance in smaller steps"
            )
        await self._move_to(target)
        ran += await self._run_due()
        return ran

    async def _move_to(self, moment: float) -> None:
        passed_ms = round((moment - self._now) * 1000)
        self._now = max(self._now, moment)
        if passed_ms > 0:
            await age_keys(self.app.client.broker.client, self.app.settings.prefix, passed_ms)

    async def _note_first_ticks(self) -> None:
        # The first tick a schedule ever sees is only recorded (a new deployment
        # does not run a tick that fell due before it existed): record them
        # now, so the first tick after the clock moves runs.
        if not self._ticks_seen:
            self._ticks_seen = True
            await self._scheduler.run_due(self._now)

    async def _next_moment(self) -> float | None:
        """The soonest moment after now when something falls due (None: nothing)."""
        now = self._now
        soonest = math.inf
        views = self.app.client.views
        for queue in self._queues():
            for _, due in await views.delayed_tasks(queue, limit=1):
                if due > now:
                    soonest = min(soonest, due)
        for periodic in self.app.periodic_tasks.values():
            soonest = min(soonest, periodic.schedule.next_after(now))
        return None if soonest == math.inf else soonest

    async def _run_due(self) -> list[FinishedTask]:
        self.ticks += [t for t in await self._scheduler.run_due(self._now) if t.outcome != "new"]
        broker = self.app.client.broker
        views = self.app.client.views
        waiting = False
        for queue in self._queues():
            await broker.promote(queue)
            waiting = waiting or bool(await views.waiting_entries(queue, 1))
        if not waiting:
            return []
        return await self.worker.run_until_idle()

    def _queues(self) -> list[str]:
        queues = list(self.worker.queues or self.app.queues)
        for periodic in self.app.periodic_tasks.values():
            if periodic.queue not in queues:
                queues.append(periodic.queue)
        return queues


def _seconds(when: float | datetime) -> float:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ClockError(
                f"the test clock needs an aware datetime (with tzinfo), got naive {when!r}"
            )
        return when.timestamp()
    return float(when)
