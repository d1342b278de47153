"""Periodic tasks: cron or fixed-interval schedules, each tick enqueued exactly once.

``@app.periodic(cron="0 3 * * MON", tz="Asia/Seoul")`` or
``@app.periodic(every=timedelta(minutes=5))`` registers a task and a schedule.
A :class:`Scheduler` runs inside every worker (and in ``aqueue beat``); all
of them may try to enqueue the same tick, and exactly one succeeds:

* a tick is a point in time; its run gets the deterministic task id
  ``periodic:<name>:<tick in ms>``;
* one Lua script (``lua/tick.lua``) claims the tick by moving the schedule's
  ``periodic:<name>`` key forward and enqueues the run in the same step, so a
  tick is either claimed and enqueued, or neither.

Missed ticks (no scheduler was running): only the latest one runs, once, when
a scheduler comes back; with ``catch_up="all"`` every missed tick runs, in
order (at most :data:`MAX_CATCH_UP` per pass). The first time a schedule is
seen its latest past tick is recorded without running, so deploying a weekly
job never fires it at once.
"""

# Over 400 lines: schedules, their declarations and the Scheduler that claims
# ticks (declared and kept in Redis, with catch-up) share the tick message.

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from ._redis.connection import ANY_REDIS_ERROR
from .client import Client
from .core.context import Context
from .core.errors import ConfigError, EnqueueError
from .core.protocol import OutgoingMessage
from .task import EnqueueOptions, Task

__all__ = [
    "PeriodicDecorator",
    "PeriodicOwner",
    "PeriodicTask",
    "Schedule",
    "ScheduleSource",
    "Scheduler",
    "TickOutcome",
    "check_catch_up",
    "make_schedule",
    "periodic_tasks",
    "tick_message",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: How long a scheduler sleeps at most between checks (clock jumps, new leaders).
MAX_SLEEP = 5.0
#: How long a scheduler that watches schedules kept in Redis sleeps at most.
WATCH_SLEEP = 1.0
#: Most missed ticks of one schedule claimed in one pass (``catch_up="all"``).
MAX_CATCH_UP = 100
#: What a scheduler does with ticks missed while no scheduler ran.
CATCH_UP_POLICIES = ("latest", "all")
#: Upper bound on a singleton's lock; finishing (or dying) releases it sooner.
SINGLETON_TTL = 7 * 86400.0


def _croniter() -> Any:
    try:
        import croniter
    except ImportError:
        raise ConfigError(
            "cron schedules need the croniter package: pip install 'aqueue[cron]'"
        ) from None
    return croniter.croniter


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a periodic task runs: a cron expression in a time zone, or a fixed interval.

    Interval ticks are aligned to the Unix epoch (``every=5 min`` ticks at
    :00, :05, ... UTC), so every scheduler computes the same ticks.
    """

    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigError("a periodic task needs exactly one of cron= or every=")
        if self.every is not None and not (self.every > 0 and math.isfinite(self.every)):
            raise ConfigError("every= must be a positive duration")
        # Time zones load with the first schedule: a worker with none never loads them.
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {self.tz!r} (use an IANA name)") from None
        if self.cron is not None and not _croniter().is_valid(self.cron):
            raise ConfigError(f"invalid cron expression {self.cron!r}")

    def latest(self, now: float) -> float:
        """The latest tick at or before ``now`` (epoch seconds)."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        from zoneinfo import ZoneInfo

        cron = _croniter()
        here = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        prev: float = cron(self.cron, here).get_prev(float)
        nxt: float = cron(self.cron, datetime.fromtimestamp(prev, ZoneInfo(self.tz))).get_next(
            float
        )
        return nxt if nxt <= now else prev

    def next_after(self, now: float) -> float:
        """The first tick strictly after ``now``."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        from zoneinfo import ZoneInfo

        here = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        nxt: float = _croniter()(self.cron, here).get_next(float)
        return nxt

    def upcoming(self, now: float, n: int) -> list[float]:
        out: list[float] = []
        t = now
        for _ in range(n):
            t = self.next_after(t)
            out.append(t)
        return out

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.tz})"
        assert self.every is not None
        return f"every {timedelta(seconds=self.every)}"


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    """A task plus the schedule, arguments and policy it is enqueued with."""

    name: str
    task: Task[Any, Any]
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    singleton: bool = False
    catch_up: str = "latest"
    """Missed ticks: ``"latest"`` runs only the latest, ``"all"`` runs each in order."""

    @property
    def queue(self) -> str:
        return self.task.config.queue

    def task_id(self, tick: float) -> str:
        """The id of the run for ``tick``: the same in every scheduler."""
        name = self.name
        if len(name) > 120:
            name = name[:80] + "~" + hashlib.sha256(name.encode()).hexdigest()[:16]
        return f"periodic:{name}:{round(tick * 1000)}"


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one claim attempt did (see ``lua/tick.lua``)."""

    name: str
    tick: float
    outcome: str
    """'enqueued', 'claimed', 'new' or 'skipped'."""
    task_id: str


class PeriodicOwner(Protocol):
    """What periodic scheduling needs of an App: its Client and its schedules."""

    @property
    def client(self) -> Client: ...
    @property
    def periodic_tasks(self) -> dict[str, PeriodicTask]: ...


#: Gives the schedules kept in Redis when they changed since the last call, else None.
ScheduleSource = Callable[[], Awaitable[dict[str, PeriodicTask] | None]]
#: Registers a function as a task with the given options (``App.task``'s work).
Register = Callable[[Callable[..., Any], dict[str, Any]], Task[Any, Any]]
#: Takes a task back out of the registry (a periodic declaration that failed).
Unregister = Callable[[Task[Any, Any]], None]


class PeriodicDecorator:
    """What ``@app.periodic(...)`` returns: registers the task and its schedule."""

    def __init__(
        self,
        register: Register,
        unregister: Unregister,
        registry: dict[str, PeriodicTask],
        schedule: Schedule,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        singleton: bool,
        task_options: dict[str, Any],
        catch_up: str = "latest",
    ) -> None:
        check_catch_up(catch_up)
        self._catch_up = catch_up
        self._register = register
        self._unregister = unregister
        self._registry = registry
        self._schedule = schedule
        self._args = tuple(args)
        self._kwargs = dict(kwargs)
        self._singleton = singleton
        self._options = task_options

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], R], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Task[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Task[Any, Any]:
        registry = self._registry
        name = self._options.get("name") or f"{fn.__module__}.{fn.__qualname__}"
        if name in registry:
            raise ConfigError(f"a periodic task named {name!r} is already registered")
        task = self._register(fn, dict(self._options))
        periodic = PeriodicTask(
            name=task.name,
            task=task,
            schedule=self._schedule,
            args=self._args,
            kwargs=self._kwargs,
            singleton=self._singleton,
            catch_up=self._catch_up,
        )
        try:
            # Check the arguments now, not at the first tick at 03:00 on Monday.
            _tick_message(periodic, 0.0)
        except EnqueueError as exc:
            self._unregister(task)
            raise ConfigError(f"periodic task {task.name}: {exc}") from exc
        registry[task.name] = periodic
        return task


def periodic_tasks(app: PeriodicOwner) -> dict[str, PeriodicTask]:
    """The App's periodic tasks by name."""
    return app.periodic_tasks


def check_catch_up(policy: object) -> str:
    """``policy`` if it is a catch-up policy; a clear error otherwise."""
    if policy not in CATCH_UP_POLICIES:
        raise ConfigError(f"catch_up must be 'latest' or 'all', got {policy!r}")
    return str(policy)


def tick_message(periodic: PeriodicTask, tick: float) -> OutgoingMessage:
    """The run of ``periodic`` for ``tick`` (built and checked, not sent)."""
    return _tick_message(periodic, tick)


def make_schedule(
    cron: str | None, every: float | timedelta | None, tz: str, args: Sequence[Any]
) -> Schedule:
    """Validate what ``@app.periodic(...)`` was given and make its schedule."""
    if isinstance(every, timedelta):
        every = every.total_seconds()
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise ConfigError("args= must be a tuple of positional arguments")
    return Schedule(cron=cron, every=every, tz=tz)


def _tick_message(
    periodic: PeriodicTask, tick: float, headers: dict[str, str] | None = None
) -> OutgoingMessage:
    task = periodic.task
    opts = EnqueueOptions(task_id=periodic.task_id(tick), trace=headers or None)
    if periodic.singleton:
        opts = EnqueueOptions(
            task_id=opts.task_id,
            unique_key=f"periodic:{periodic.name}",
            unique_for=SINGLETON_TTL,
            trace=opts.trace,
        )
    _, message = task.build_message(periodic.args, periodic.kwargs, opts)
    return message


class Scheduler:
    """Enqueues the ticks of an App's periodic tasks; safe to run in many processes.

    ``clock`` returns epoch seconds; tests inject a fake one and call
    :meth:`run_due` directly.
    """

    def __init__(
        self,
        app: PeriodicOwner,
        *,
        clock: Callable[[], float] = time.time,
        source: ScheduleSource | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        #: Where schedules kept in Redis come from (None: only declared ones).
        self.source = source
        self._stored: dict[str, PeriodicTask] = {}
        self._seen: dict[str, float] = {}
        self._stop = asyncio.Event()

    @property
    def periodic(self) -> dict[str, PeriodicTask]:
        if not self._stored:
            return self.app.periodic_tasks
        return {**self._stored, **self.app.periodic_tasks}

    async def refresh(self) -> None:
        """Take up changes to the schedules kept in Redis (cheap when there are none)."""
        if self.source is None:
            return
        stored = await self.source()
        if stored is None:
            return
        for name in set(self._stored) | set(stored):
            if self._stored.get(name) != stored.get(name):
                self._seen.pop(name, None)  # changed: look at its ticks afresh
        self._stored = stored

    async def claim(self, periodic: PeriodicTask, tick: float) -> TickOutcome:
        """Try to claim ``tick`` of ``periodic`` and enqueue its run (inside the App's
        ``enqueue`` middleware, whose job has a task id only when this claim enqueued)."""
        hooks = self.app.client.hooks
        broker = self.app.client.broker
        at_ms = round(tick * 1000)
        if hooks.has("enqueue"):
            job = periodic.task.hook_job(EnqueueOptions(), periodic.args, periodic.kwargs)

            async def send() -> tuple[str, str]:
                message = _tick_message(periodic, tick, job.headers)
                sent = await broker.claim_tick(periodic.queue, periodic.name, at_ms, message)
                if sent[0] == "enqueued":
                    job.task_id = sent[1]
                return sent

            outcome, task_id = await hooks.around("enqueue", job, send)
        else:
            message = _tick_message(periodic, tick)
            outcome, task_id = await broker.claim_tick(
                periodic.queue, periodic.name, at_ms, message
            )
        result = TickOutcome(periodic.name, tick, outcome, task_id)
        if result.outcome == "enqueued":
            logger.info(
                "periodic %s: enqueued the %s tick as %s",
                periodic.name,
                _fmt(tick, periodic.schedule.tz),
                result.task_id,
                extra={"task_id": result.task_id, "task_name": periodic.task.name},
            )
        elif result.outcome == "skipped":
            logger.info(
                "periodic %s: skipped the %s tick, the previous run %s is still live",
                periodic.name,
                _fmt(tick, periodic.schedule.tz),
                result.task_id,
            )
        return result

    async def run_due(self, now: float | None = None) -> list[TickOutcome]:
        """Claim the latest due tick of every periodic task not claimed here yet."""
        now = self.clock() if now is None else now
        outcomes = []
        for name, periodic in self.periodic.items():
            tick = periodic.schedule.latest(now)
            if self._seen.get(name, -math.inf) >= tick:
                continue
            if periodic.catch_up == "all":
                missed = await self._missed(periodic, tick)
                for earlier in missed:  # one after another: each claim moves the mark
                    outcomes.append(await self.claim(periodic, earlier))  # noqa: PERF401
                if len(missed) >= MAX_CATCH_UP:
                    continue  # more next pass; the latest tick is not reached yet
            outcomes.append(await self.claim(periodic, tick))
            self._seen[name] = tick
        return outcomes

    async def _missed(self, periodic: PeriodicTask, tick: float) -> list[float]:
        """Ticks after the last claimed one and before ``tick`` (``catch_up="all"``)."""
        last = await self.app.client.views.last_tick(periodic.queue, periodic.name)
        missed: list[float] = []
        if last is None:
            return missed  # never seen: the first tick is recorded, not run
        at = periodic.schedule.next_after(last)
        while at < tick and len(missed) < MAX_CATCH_UP:
            missed.append(at)
            at = periodic.schedule.next_after(at)
        return missed

    def seconds_until_next(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        nexts = [p.schedule.next_after(now) for p in self.periodic.values()]
        if not nexts:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, min(nexts) - now))

    def stop(self) -> None:
        """Make :meth:`run` return (without relying on cancellation)."""
        self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`stop` is called or the task is cancelled."""
        if not self.periodic and self.source is None:
            return
        delay = 0.1
        while not self._stop.is_set():
            try:
                await self.refresh()
                await self.run_due()
                delay = 0.1
                # A hair past the tick so the clock surely reads at or after it.
                pause = self.seconds_until_next() + 0.001
                if self.source is not None:
                    pause = min(pause, WATCH_SLEEP)  # changes are seen within a second
            except ANY_REDIS_ERROR as exc:
                # READONLY after a failover, LOADING, ...: the worker keeps running.
                logger.warning("scheduler: Redis error (%s); retrying in %.1fs", exc, delay)
                pause, delay = delay, min(delay * 2, MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stop.wait()

    async def last_ticks(self) -> dict[str, float | None]:
        """The last tick claimed for each periodic task (None: never)."""
        views = self.app.client.views
        return {
            name: await views.last_tick(periodic.queue, name)
            for name, periodic in self.periodic.items()
        }


def _fmt(tick: float, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(tick, ZoneInfo(tz)).isoformat()
