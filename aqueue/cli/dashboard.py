"""``aqueue dashboard``: serve the web dashboard until SIGTERM/SIGINT.

Like every operator command it needs only ``--url`` (and ``--prefix``);
with ``-A MODULE:APP`` it also knows the App's queues, task names, periodic
schedules and signing key. It listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
from typing import Any

from .base import add_target_arguments, split_queues, target_from_args

__all__ = ["add_parsers"]

logger = logging.getLogger("aqueue.cli")

#: The dashboard's credentials variable, named here so that building the
#: command line (every ``aqueue`` command does) doesn't import the dashboard;
#: tests/test_worker_startup.py checks it is the dashboard's own.
AUTH_ENV = "AQUEUE_DASHBOARD_AUTH"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve the web dashboard",
        description="Serve a live web dashboard of the queues, workers, tasks, dead letters "
        "and schedules. Binds 127.0.0.1 by default: put it behind authentication before "
        "opening it to a network.",
    )
    add_target_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8484, help="port to listen on (default 8484)")
    p.add_argument("--queues", help="comma-separated queues (default: the app's, or all found)")
    p.add_argument(
        "--read-only", action="store_true", help="show everything, offer and accept no action"
    )
    p.add_argument(
        "--redact",
        action="store_true",
        help="hide every task's arguments, results and stream chunks (errors stay visible)",
    )
    p.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=None,
        help=f"ask for these HTTP basic credentials (default: {AUTH_ENV}, else none)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=dashboard)


async def dashboard(args: argparse.Namespace) -> int:
    """``aqueue dashboard``: serve until SIGTERM/SIGINT."""
    from ..dashboard import Dashboard, serve  # only this command needs the web app
    from ..dashboard.auth import parse_credentials

    credentials = args.basic_auth or os.environ.get(AUTH_ENV) or None
    basic = parse_credentials(credentials) if credentials else None
    target = target_from_args(args, args.app)
    app = target.app
    await app.connect()
    web = Dashboard(
        app,
        queues=split_queues(args.queues),
        read_only=args.read_only,
        basic_auth=basic,
        from_code=target.from_code,
        redact=args.redact,
    )
    if basic is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "dashboard: listening on %s without authentication: anyone who can reach it "
            "can abort tasks and purge queues (use --basic-auth or --read-only)",
            args.host,
        )
    started = time.perf_counter()
    queues = await web.start()
    logger.info(
        "dashboard: %d queue(s) (%s), found in %.1f s",
        len(queues),
        ", ".join(queues),
        time.perf_counter() - started,
    )
    server = await serve(web, args.host, args.port)
    logger.info(
        "dashboard: serving http://%s:%d/%s",
        args.host,
        server.port,
        " (read-only)" if args.read_only else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await web.close()
        await app.close()
    return 0
