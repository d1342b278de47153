"""``aqueue beat`` (a scheduler without a worker) and ``aqueue schedule`` (list schedules)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .periodic import Scheduler, periodic_tasks

__all__ = ["add_parser"]

logger = logging.getLogger("aqueue.beat")


async def cmd_beat(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    scheduler = Scheduler(app)
    if not scheduler.periodic:
        logger.error("%s has no periodic tasks (declare them with @app.periodic)", args.app)
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


async def cmd_schedule(args: argparse.Namespace) -> int:
    from .cli import app_from_args

    app = app_from_args(args)
    periodic = periodic_tasks(app)
    if not periodic:
        print(f"{args.app} has no periodic tasks")
        return 0
    scheduler = Scheduler(app)
    last: dict[str, float | None] = {}
    if not args.offline:
        async with app:
            last = await scheduler.last_ticks()
    now = time.time()
    for name, p in periodic.items():
        tz = ZoneInfo(p.schedule.tz)
        flags = " singleton" if p.singleton else ""
        print(f"{name}: {p.schedule.describe()} queue={p.queue}{flags}")
        if p.args or p.kwargs:
            print(f"  args: {p.args!r} kwargs: {dict(p.kwargs)!r}")
        if name in last:
            seen = last[name]
            text = datetime.fromtimestamp(seen, tz).isoformat() if seen is not None else "never"
            print(f"  last tick claimed: {text}")
        for tick in p.schedule.upcoming(now, args.count):
            print(f"  next: {datetime.fromtimestamp(tick, tz).isoformat()}")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "beat",
        help="enqueue periodic tasks without running a worker",
        description="Run only the scheduler of MODULE:APP's periodic tasks (workers run "
        "one too unless started with --no-beat; any number may run, each tick is "
        "enqueued once).",
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_beat)

    p = sub.add_parser(
        "schedule",
        help="list periodic tasks and their next run times",
        description="List MODULE:APP's periodic tasks, the last tick claimed and the next ones.",
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.add_argument("-n", "--count", type=int, default=3, help="next run times to show (default 3)")
    p.add_argument(
        "--offline", action="store_true", help="don't connect to Redis (no last tick shown)"
    )
    p.set_defaults(func=cmd_schedule)
