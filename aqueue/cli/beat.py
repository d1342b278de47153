"""``aqueue beat`` (a scheduler without a worker) and ``aqueue schedule`` (list schedules).

``beat`` needs the App (the schedules are declared in code). ``schedule``
with the App lists each schedule, its last claimed tick and the next ones;
with only ``--url``/``--prefix`` it lists the last tick of every schedule
found in Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..app import App
from ..periodic import Scheduler
from .base import add_target_arguments, target_from_args

__all__ = ["add_parsers"]

logger = logging.getLogger("aqueue.beat")


async def beat(args: argparse.Namespace) -> int:
    """``aqueue beat MODULE:APP``: enqueue the App's periodic tasks until SIGTERM/SIGINT."""
    app = target_from_args(args, args.app, required=True).app
    scheduler = Scheduler(app)
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


async def schedule(args: argparse.Namespace) -> int:
    """``aqueue schedule``: periodic tasks, their last claimed tick and the next ones."""
    target = target_from_args(args, args.app)
    if not target.from_code:
        return await _claimed_ticks(target.app)
    app = target.app
    periodic = app.periodic_tasks
    if not periodic:
        print("the app has no periodic tasks")
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


async def _claimed_ticks(app: App) -> int:
    async with app:
        ticks = await app.client.views.claimed_ticks()
    if not ticks:
        print("no periodic schedule has claimed a tick here (give -A MODULE:APP to see them)")
        return 0
    for queue, name, tick in ticks:
        when = datetime.fromtimestamp(tick, ZoneInfo("UTC")).isoformat()
        print(f"{name}: queue={queue}\n  last tick claimed: {when}")
    return 0


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
        help="list periodic tasks and their next run times",
        description="List MODULE:APP's periodic tasks, the last tick claimed and the next ones.",
    )
    add_target_arguments(p)
    p.add_argument("-n", "--count", type=int, default=3, help="next run times to show (default 3)")
    p.add_argument(
        "--offline", action="store_true", help="don't connect to Redis (no last tick shown)"
    )
    p.set_defaults(func=schedule)
