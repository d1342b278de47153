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
a scheduler comes back. The first time a schedule is seen its latest past tick
is recorded without running, so deploying a weekly job never fires it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis.exceptions
from redis.commands.core import AsyncScript

from .broker import REDIS_ERRORS, OutgoingMessage
from .context import Context
from .errors import ConfigError, EnqueueError
from .task import EnqueueOptions, Task

if TYPE_CHECKING:
    from .app import App
    from .broker import Broker

__all__ = ["PeriodicTask", "Schedule", "Scheduler", "TickOutcome"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: How long a scheduler sleeps at most between checks (clock jumps, new leaders).
MAX_SLEEP = 5.0
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


class PeriodicDecorator:
    """What ``@app.periodic(...)`` returns: registers the task and its schedule."""

    def __init__(
        self,
        app: App,
        schedule: Schedule,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        singleton: bool,
        task_options: dict[str, Any],
    ) -> None:
        self._app = app
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
        app = self._app
        registry = periodic_tasks(app)
        name = self._options.get("name") or f"{fn.__module__}.{fn.__qualname__}"
        if name in registry:
            raise ConfigError(f"a periodic task named {name!r} is already registered")
        task = app._register(fn, dict(self._options))
        periodic = PeriodicTask(
            name=task.name,
            task=task,
            schedule=self._schedule,
            args=self._args,
            kwargs=self._kwargs,
            singleton=self._singleton,
        )
        try:
            # Check the arguments now, not at the first tick at 03:00 on Monday.
            _tick_message(periodic, 0.0)
        except EnqueueError as exc:
            del app.tasks[task.name]
            raise ConfigError(f"periodic task {task.name}: {exc}") from exc
        registry[task.name] = periodic
        return task


def periodic_tasks(app: App) -> dict[str, PeriodicTask]:
    """The App's periodic tasks by name."""
    found: dict[str, PeriodicTask] | None = app.__dict__.get("_periodic_tasks")
    if found is None:
        found = app.__dict__["_periodic_tasks"] = {}
    return found


def make_decorator(
    app: App,
    *,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    singleton: bool,
    task_options: dict[str, Any],
) -> PeriodicDecorator:
    if isinstance(every, timedelta):
        every = every.total_seconds()
    schedule = Schedule(cron=cron, every=every, tz=tz)
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise ConfigError("args= must be a tuple of positional arguments")
    return PeriodicDecorator(app, schedule, args, kwargs or {}, singleton, task_options)


def _tick_message(periodic: PeriodicTask, tick: float) -> OutgoingMessage:
    task = periodic.task
    opts = EnqueueOptions(task_id=periodic.task_id(tick))
    if periodic.singleton:
        opts = EnqueueOptions(
            task_id=opts.task_id, unique_key=f"periodic:{periodic.name}", unique_for=SINGLETON_TTL
        )
    _, message = task._message(periodic.args, periodic.kwargs, opts)
    return message


class Scheduler:
    """Enqueues the ticks of an App's periodic tasks; safe to run in many processes.

    ``clock`` returns epoch seconds; tests inject a fake one and call
    :meth:`run_due` directly.
    """

    def __init__(self, app: App, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._script: AsyncScript | None = None
        self._script_broker: Broker | None = None
        self._stop = asyncio.Event()

    @property
    def periodic(self) -> dict[str, PeriodicTask]:
        return periodic_tasks(self.app)

    def _tick_script(self, broker: Broker) -> AsyncScript:
        if self._script is None or self._script_broker is not broker:
            from .broker import _load_lua

            self._script = broker.client.register_script(_load_lua("tick"))
            self._script_broker = broker
        return self._script

    async def claim(self, periodic: PeriodicTask, tick: float) -> TickOutcome:
        """Try to claim ``tick`` of ``periodic`` and enqueue its run."""
        broker = self.app.broker
        keys = broker.keys(periodic.queue)
        message = _tick_message(periodic, tick)
        unique_key = keys.unique(message.unique_key) if message.unique_key else ""
        outcome, task_id = await self._tick_script(broker)(
            keys=[keys.periodic(periodic.name), keys.stream],
            args=[
                keys.task_prefix,
                round(tick * 1000),
                message.task_id,
                message.task_name,
                message.payload,
                unique_key,
                message.unique_ttl_ms,
            ],
        )
        result = TickOutcome(periodic.name, tick, _text(outcome), _text(task_id))
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
            outcomes.append(await self.claim(periodic, tick))
            self._seen[name] = tick
        return outcomes

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
        if not self.periodic:
            return
        delay = 0.1
        while not self._stop.is_set():
            try:
                await self.run_due()
                delay = 0.1
                # A hair past the tick so the clock surely reads at or after it.
                pause = self.seconds_until_next() + 0.001
            except (*REDIS_ERRORS, redis.exceptions.RedisError) as exc:
                # READONLY after a failover, LOADING, ...: the worker keeps running.
                logger.warning("scheduler: Redis error (%s); retrying in %.1fs", exc, delay)
                pause, delay = delay, min(delay * 2, MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stop.wait()

    async def last_ticks(self) -> dict[str, float | None]:
        """The last tick claimed for each periodic task (None: never)."""
        broker = self.app.broker
        out: dict[str, float | None] = {}
        for name, periodic in self.periodic.items():
            raw = await broker.client.get(broker.keys(periodic.queue).periodic(name))
            out[name] = int(raw) / 1000 if raw is not None else None
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fmt(tick: float, tz: str) -> str:
    return datetime.fromtimestamp(tick, ZoneInfo(tz)).isoformat()
