"""Schedules kept in Redis: added, changed, paused and removed at run time.

``@app.periodic`` declares a schedule in code; ``app.schedules`` keeps more
in Redis, so an operator adds one without a deploy::

    await app.schedules.add("nightly-report", report, cron="0 3 * * *", tz="Europe/Paris")
    await app.schedules.pause("nightly-report")
    await app.schedules.resume("nightly-report")
    await app.schedules.remove("nightly-report")
    for info in await app.schedules.list(): ...

Each schedule is one field of a hash (``<prefix>:{schedules}:all``), and
every change bumps a counter beside it. Every worker's scheduler reads the
counter once a second and, when it moved, the hash: a change is picked up
within a second, and nothing more than one ``GET`` a second is spent when
nothing changes. A stored schedule's ticks are claimed like a declared one's
(``lua/tick.lua``), so each tick is enqueued exactly once however many
workers schedule. The task must be registered on the workers; a schedule
naming a task a worker does not know is skipped there, with a warning.

Arguments are stored as msgpack (never pickle) and checked against the
task's signature when the task is known where the schedule is added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

import msgspec

from .client import Client
from .core.config import Settings
from .core.errors import ConfigError, EnqueueError
from .periodic import (
    PeriodicTask,
    Schedule,
    check_catch_up,
    make_schedule,
    tick_message,
)
from .task import Task

__all__ = ["ScheduleInfo", "Schedules", "StoredSchedule", "StoredScheduleSource"]

logger = logging.getLogger(__name__)

_MAX_NAME = 200


class StoredSchedule(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    """One schedule as kept in Redis (msgpack; fields only ever added, with defaults)."""

    task: str
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    paused: bool = False
    catch_up: str = "latest"
    queue: str | None = None
    """The task's queue when it was known where the schedule was added."""

    def schedule(self) -> Schedule:
        return Schedule(cron=self.cron, every=self.every, tz=self.tz)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StoredSchedule).decode


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as ``app.schedules.list()`` and ``aqueue schedule list`` show it."""

    name: str
    task: str
    source: str
    """``"code"`` (``@app.periodic``) or ``"redis"`` (``app.schedules``)."""
    schedule: Schedule
    queue: str | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    paused: bool
    catch_up: str
    next_run: float | None
    """Epoch seconds of the next tick (None while paused)."""
    last_tick: float | None = None
    """Epoch seconds of the last tick claimed (None: never, or not read)."""

    @property
    def describe(self) -> str:
        """``cron '0 3 * * *' (UTC)`` or ``every 0:05:00``."""
        return self.schedule.describe()


class ScheduleOwner(Protocol):
    """What schedules kept in Redis need of an App."""

    @property
    def client(self) -> Client: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def tasks(self) -> dict[str, Task[Any, Any]]: ...
    @property
    def periodic_tasks(self) -> dict[str, PeriodicTask]: ...


class Schedules:
    """``app.schedules``: the schedules kept in Redis for one App (one prefix)."""

    def __init__(self, app: ScheduleOwner) -> None:
        self.app = app

    async def add(
        self,
        name: str,
        task: Task[Any, Any] | str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        catch_up: str = "latest",
    ) -> ScheduleInfo:
        """Add a schedule, or change the one of that name (its paused state is kept).

        ``task`` is a registered task or a task name. Running workers pick it up
        within a second; the first tick that runs is the first one after now.
        """
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME or "\n" in name:
            raise ConfigError("a schedule name must be 1-200 characters without newlines")
        if name in self.app.periodic_tasks:
            raise ConfigError(
                f"{name!r} is a schedule declared in code (@app.periodic); choose another name"
            )
        task_name = task.name if isinstance(task, Task) else task
        if not isinstance(task_name, str) or not task_name:
            raise ConfigError(f"task must be a registered task or a task name, got {task!r}")
        schedule = make_schedule(cron, every, tz, args)
        check_catch_up(catch_up)
        known = self.app.tasks.get(task_name)
        if isinstance(task, Task) and known is None:
            known = task
        try:
            stored = StoredSchedule(
                task=task_name,
                cron=schedule.cron,
                every=schedule.every,
                tz=schedule.tz,
                args=list(args),
                kwargs=dict(kwargs or {}),
                catch_up=catch_up,
                queue=known.config.queue if known is not None else None,
            )
            encoded = _encode(stored)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"schedule {name!r}: arguments can't be stored: {exc}") from None
        if known is not None:
            # Checked now, not at the first tick at 03:00 on Monday.
            try:
                tick_message(_periodic(name, known, stored), 0.0)
            except EnqueueError as exc:
                raise ConfigError(f"schedule {name!r}: {exc}") from None
        previous = await self._stored_one(name)
        if previous is not None and previous.paused:
            stored = msgspec.structs.replace(stored, paused=True)
            encoded = _encode(stored)
        broker = self.app.client.broker
        # Past ticks never fire: added now, the first run is the next tick.
        queue = self._queue(stored)
        await broker.advance_tick(queue, name, round(schedule.latest(time.time()) * 1000))
        await broker.save_schedule(name, encoded)
        return self._info(name, stored, time.time())

    async def remove(self, name: str) -> bool:
        """Remove a stored schedule; False when there is none of that name."""
        return await self.app.client.broker.drop_schedule(name)

    async def pause(self, name: str) -> None:
        """Stop enqueuing a stored schedule's ticks until :meth:`resume`."""
        stored = await self._require(name)
        if not stored.paused:
            await self.app.client.broker.save_schedule(
                name, _encode(msgspec.structs.replace(stored, paused=True))
            )

    async def resume(self, name: str) -> None:
        """Enqueue a paused schedule's ticks again, from the next one on.

        Ticks that passed while it was paused do not run (whatever ``catch_up``).
        """
        stored = await self._require(name)
        if not stored.paused:
            return
        latest = stored.schedule().latest(time.time())
        await self.app.client.broker.advance_tick(self._queue(stored), name, round(latest * 1000))
        await self.app.client.broker.save_schedule(
            name, _encode(msgspec.structs.replace(stored, paused=False))
        )

    async def list(self, *, code: bool = True) -> list[ScheduleInfo]:
        """Every schedule, declared in code (unless ``code=False``) and stored, by name,
        with its next run and last claimed tick."""
        now = time.time()
        infos: list[ScheduleInfo] = []
        if code:
            for name, p in self.app.periodic_tasks.items():
                infos.append(
                    ScheduleInfo(
                        name=name,
                        task=p.task.name,
                        source="code",
                        schedule=p.schedule,
                        queue=p.queue,
                        args=p.args,
                        kwargs=p.kwargs,
                        paused=False,
                        catch_up=p.catch_up,
                        next_run=p.schedule.next_after(now),
                    )
                )
        for name, stored in (await self._stored()).items():
            infos.append(self._info(name, stored, now))
        views = self.app.client.views
        out = []
        for info in sorted(infos, key=lambda i: i.name):
            last = await views.last_tick(info.queue or self.app.settings.default_queue, info.name)
            out.append(replace(info, last_tick=last))
        return out

    # -- helpers ----------------------------------------------------------------

    def _queue(self, stored: StoredSchedule) -> str:
        known = self.app.tasks.get(stored.task)
        if known is not None:
            return known.config.queue
        return stored.queue or self.app.settings.default_queue

    def _info(self, name: str, stored: StoredSchedule, now: float) -> ScheduleInfo:
        schedule = stored.schedule()
        return ScheduleInfo(
            name=name,
            task=stored.task,
            source="redis",
            schedule=schedule,
            queue=self._queue(stored),
            args=tuple(stored.args),
            kwargs=stored.kwargs,
            paused=stored.paused,
            catch_up=stored.catch_up,
            next_run=None if stored.paused else schedule.next_after(now),
        )

    async def _stored(self) -> dict[str, StoredSchedule]:
        raw = await self.app.client.views.stored_schedules()
        out: dict[str, StoredSchedule] = {}
        for name, encoded in sorted(raw.items()):
            try:
                out[name] = _decode(encoded)
            except msgspec.DecodeError as exc:
                logger.warning("schedule %s in Redis can't be read (%s); skipped", name, exc)
        return out

    async def _stored_one(self, name: str) -> StoredSchedule | None:
        return (await self._stored()).get(name)

    async def _require(self, name: str) -> StoredSchedule:
        stored = await self._stored_one(name)
        if stored is None:
            raise ConfigError(f"no schedule named {name!r} is kept in Redis")
        return stored


def _periodic(name: str, task: Task[Any, Any], stored: StoredSchedule) -> PeriodicTask:
    return PeriodicTask(
        name=name,
        task=task,
        schedule=stored.schedule(),
        args=tuple(stored.args),
        kwargs=stored.kwargs,
        catch_up=stored.catch_up,
    )


class StoredScheduleSource:
    """A scheduler's view of the schedules kept in Redis (``Scheduler(source=...)``).

    Each call reads the change counter (one ``GET``); only when it moved are the
    schedules read again and returned, as the periodic tasks this App can run.
    """

    def __init__(self, app: ScheduleOwner) -> None:
        self.app = app
        self._version = -1
        self._warned: set[tuple[str, str]] = set()

    async def __call__(self) -> dict[str, PeriodicTask] | None:
        views = self.app.client.views
        version = await views.schedules_version()
        if version == self._version:
            return None
        raw = await views.stored_schedules()
        self._version = version
        found: dict[str, PeriodicTask] = {}
        for name, encoded in raw.items():
            if name in self.app.periodic_tasks:
                continue  # a declared schedule of that name wins
            try:
                stored = _decode(encoded)
                if stored.paused:
                    continue
                task = self.app.tasks.get(stored.task)
                if task is None:
                    self._warn(name, f"its task {stored.task!r} is not registered on this worker")
                    continue
                periodic = _periodic(name, task, stored)
                tick_message(periodic, 0.0)  # arguments that fit, before the first tick
            except (msgspec.DecodeError, ConfigError, EnqueueError) as exc:
                self._warn(name, str(exc))
                continue
            found[name] = periodic
        return found

    def _warn(self, name: str, why: str) -> None:
        if (name, why) not in self._warned:
            self._warned.add((name, why))
            logger.warning("schedule %s kept in Redis is skipped: %s", name, why)
