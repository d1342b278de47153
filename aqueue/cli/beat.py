"""``aqueue beat`` (a scheduler without a worker) and ``aqueue schedule`` (schedules).

``beat`` needs the App (the schedules are declared in code; it runs those kept
in Redis too). ``schedule`` with the App lists each declared schedule, its
last claimed tick and the next ones, then the schedules kept in Redis; with
only ``--url``/``--prefix`` it lists the stored ones and the last tick of every
other schedule found in Redis. ``schedule add|pause|resume|remove`` change
the schedules kept in Redis (see :mod:`aqueue.schedules`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..app import App
from ..core.errors import ConfigError
from ..periodic import Scheduler
from ..schedules import ScheduleInfo, StoredScheduleSource
from .base import add_target_arguments, target_from_args

__all__ = ["add_parsers"]

logger = logging.getLogger("aqueue.beat")


async def beat(args: argparse.Namespace) -> int:
    """``aqueue beat MODULE:APP``: enqueue the App's periodic tasks until SIGTERM/SIGINT."""
    app = target_from_args(args, args.app, required=True).app
    # Declared schedules, and those kept in Redis (watched each second).
    scheduler = Scheduler(app, source=StoredScheduleSource(app))
    if not scheduler.periodic:
        logger.error("the app has no periodic tasks (declare them with @app.periodic)")
        return 1
    await app.connect()
    for name, periodic in scheduler.periodic.items():
        logger.info("beat: %s %s -> queue %s", name, periodic.schedule.describe(), periodic.queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(scheduler.run(), name="aqueue-beat")
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        scheduler.stop()  # not a cancel: redis-py may swallow one mid-connect
        stopper.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        await app.close()
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        logger.error("scheduler crashed: %s", runner.exception())
        return 1
    return 0


#: ``aqueue schedule ACTION ...``; without an action it lists (the older form).
_ACTIONS = {"add": 2, "list": 0, "pause": 1, "resume": 1, "remove": 1}


async def schedule(args: argparse.Namespace) -> int:
    """``aqueue schedule [add|list|pause|resume|remove] ...``: declared and stored schedules."""
    positional: str | None = args.app
    words: list[str] = list(args.words)
    action = "list"
    if positional in _ACTIONS:
        action, positional = positional, None
    elif words:
        raise ConfigError(
            f"unexpected {' '.join(words)!r}: use aqueue schedule "
            "[add NAME TASK_NAME | list | pause NAME | resume NAME | remove NAME]"
        )
    if len(words) != _ACTIONS[action]:
        usage = {
            "add": "add NAME TASK_NAME (--cron EXPR | --every SECONDS)",
            "list": "list",
            "pause": "pause NAME",
            "resume": "resume NAME",
            "remove": "remove NAME",
        }[action]
        raise ConfigError(f"usage: aqueue schedule {usage}")
    target = target_from_args(args, positional)
    if action == "list":
        return await _list(args, target.app, target.from_code)
    app = target.app
    async with app:
        if action == "add":
            name, task_name = words
            info = await app.schedules.add(
                name,
                task_name,
                cron=args.cron,
                every=args.every,
                tz=args.tz,
                args=_json_arg(args.args, list, "--args", "a JSON array"),
                kwargs=_json_arg(args.kwargs, dict, "--kwargs", "a JSON object"),
                catch_up=args.catch_up,
            )
            if not target.from_code:
                print(
                    f"note: without -A the arguments of {task_name} are checked by the "
                    "workers, which skip the schedule with a warning if they don't fit"
                )
            print(f"added {name}: {info.describe} -> {task_name}")
            _print_next(info, 1)
        elif action == "remove":
            if not await app.schedules.remove(words[0]):
                raise ConfigError(f"no schedule named {words[0]!r} is kept in Redis")
            print(f"removed {words[0]}")
        elif action == "pause":
            await app.schedules.pause(words[0])
            print(f"paused {words[0]}")
        else:
            await app.schedules.resume(words[0])
            print(f"resumed {words[0]} (from its next tick)")
    return 0


def _json_arg(text: str | None, kind: type, option: str, what: str) -> Any:
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} must be {what}: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{option} must be {what}, got {type(value).__name__}")
    return value


def _print_next(info: ScheduleInfo, count: int) -> None:
    if info.paused:
        print("  paused")
        return
    tz = ZoneInfo(info.schedule.tz)
    for tick in info.schedule.upcoming(time.time(), count):
        print(f"  next: {datetime.fromtimestamp(tick, tz).isoformat()}")


async def _list(args: argparse.Namespace, app: App, from_code: bool) -> int:
    """Declared schedules (with an App) and those kept in Redis, with their next runs."""
    if args.offline:
        if from_code:
            _print_declared(args, app, {})
        return 0
    async with app:
        stored = await app.schedules.list(code=False)
        if from_code:
            last = await Scheduler(app).last_ticks()
            _print_declared(args, app, last)
        for info in stored:
            _print_stored(args, info)
        if not from_code:
            await _claimed_ticks(app, {info.name for info in stored}, bool(stored))
    return 0


def _print_declared(args: argparse.Namespace, app: App, last: dict[str, float | None]) -> None:
    periodic = app.periodic_tasks
    if not periodic:
        print("the app has no periodic tasks")
        return
    now = time.time()
    for name, p in periodic.items():
        tz = ZoneInfo(p.schedule.tz)
        flags = " singleton" if p.singleton else ""
        flags += " catch-up=all" if p.catch_up == "all" else ""
        print(f"{name}: {p.schedule.describe()} queue={p.queue}{flags}")
        if p.args or p.kwargs:
            print(f"  args: {p.args!r} kwargs: {dict(p.kwargs)!r}")
        if name in last:
            seen = last[name]
            text = datetime.fromtimestamp(seen, tz).isoformat() if seen is not None else "never"
            print(f"  last tick claimed: {text}")
        for tick in p.schedule.upcoming(now, args.count):
            print(f"  next: {datetime.fromtimestamp(tick, tz).isoformat()}")


def _print_stored(args: argparse.Namespace, info: ScheduleInfo) -> None:
    flags = " paused" if info.paused else ""
    flags += " catch-up=all" if info.catch_up == "all" else ""
    print(
        f"{info.name}: {info.describe} task={info.task} queue={info.queue} (kept in Redis){flags}"
    )
    if info.args or info.kwargs:
        print(f"  args: {list(info.args)!r} kwargs: {dict(info.kwargs)!r}")
    tz = ZoneInfo(info.schedule.tz)
    seen = info.last_tick
    text = datetime.fromtimestamp(seen, tz).isoformat() if seen is not None else "never"
    print(f"  last tick claimed: {text}")
    _print_next(info, args.count)


async def _claimed_ticks(app: App, skip: set[str], listed: bool) -> None:
    ticks = [t for t in await app.client.views.claimed_ticks() if t[1] not in skip]
    if not ticks:
        if not listed:
            print("no periodic schedule has claimed a tick here (give -A MODULE:APP to see them)")
        return
    for queue, name, tick in ticks:
        when = datetime.fromtimestamp(tick, ZoneInfo("UTC")).isoformat()
        print(f"{name}: queue={queue}\n  last tick claimed: {when}")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "beat",
        help="enqueue periodic tasks without running a worker",
        description="Run only the scheduler of MODULE:APP's periodic tasks (workers run "
        "one too unless started with --no-beat; any number may run, each tick is "
        "enqueued once).",
    )
    add_target_arguments(p, required=True)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=beat)

    p = sub.add_parser(
        "schedule",
        help="list, add, pause, resume or remove schedules",
        usage="aqueue schedule [list] [-A MODULE:APP] [-n COUNT] [--offline]\n"
        "       aqueue schedule add NAME TASK_NAME (--cron EXPR | --every SECONDS) [--tz TZ]"
        "\n                       [--args JSON] [--kwargs JSON] [--catch-up {latest,all}]\n"
        "       aqueue schedule pause|resume|remove NAME\n"
        "       (each also takes -A MODULE:APP, --url URL, --prefix PREFIX)",
        description="aqueue schedule [list]: the schedules declared in code (with -A "
        "MODULE:APP) and those kept in Redis, the last tick claimed and the next ones. "
        "aqueue schedule add NAME TASK_NAME (--cron EXPR | --every SECONDS) [--tz TZ] "
        "[--args JSON] [--kwargs JSON]: keep a schedule in Redis (running workers pick it "
        "up within a second). aqueue schedule pause|resume|remove NAME.",
    )
    add_target_arguments(p)
    p.add_argument("words", nargs="*", metavar="NAME", help="the schedule (and task) named")
    p.add_argument("--cron", help="add: a cron expression, e.g. '0 3 * * MON'")
    p.add_argument("--every", type=float, help="add: an interval in seconds")
    p.add_argument("--tz", default="UTC", help="add: the cron expression's time zone (IANA)")
    p.add_argument("--args", help="add: the positional arguments, a JSON array")
    p.add_argument("--kwargs", help="add: the keyword arguments, a JSON object")
    p.add_argument(
        "--catch-up",
        default="latest",
        choices=["latest", "all"],
        help="add: ticks missed while no worker ran: run only the latest (default) or all",
    )
    p.add_argument("-n", "--count", type=int, default=3, help="next run times to show (default 3)")
    p.add_argument(
        "--offline", action="store_true", help="don't connect to Redis (no last tick shown)"
    )
    p.set_defaults(func=schedule)
