"""The ``aqueue`` command: a thin layer over :class:`aqueue.Worker` and the App.

Signal handlers and log handlers are installed here, never by the library.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ._version import __version__
from .app import App
from .errors import AqueueError

__all__ = ["load_app", "main"]

logger = logging.getLogger("aqueue.cli")

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: Modules that add subcommands: each has ``add_parser(subparsers)`` whose
#: parsers set ``func`` to an ``async def (args) -> exit code``.
SUBCOMMAND_MODULES = [".demo", ".inspect", ".ops", ".multi", ".periodic_cli", ".deadletter"]


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (default attribute ``app``) and return the App."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(
            f"error: can't import {module_name!r} ({exc}). Run from the directory that "
            f"contains it, or set PYTHONPATH"
        ) from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise SystemExit(f"error: {spec!r} is not an aqueue.App (found {type(app).__name__})")
    return app


def setup_logging(level: str, logfile: str | None = None) -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def app_from_args(args: argparse.Namespace) -> App:
    """The App named by ``args.app``, with ``--url`` / ``--visibility-timeout`` applied."""
    return _app_with_overrides(args)


def _app_with_overrides(args: argparse.Namespace) -> App:
    app = load_app(args.app)
    overrides: dict[str, Any] = {}
    if getattr(args, "url", None):
        overrides["redis_url"] = args.url
    if getattr(args, "visibility_timeout", None):
        overrides["visibility_timeout"] = args.visibility_timeout
    if overrides:
        import dataclasses

        from .config import Settings

        values = {f.name: getattr(app.settings, f.name) for f in dataclasses.fields(Settings)}
        values.update(overrides)
        app.settings = Settings.from_options(values)
    return app


async def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    app = _app_with_overrides(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    worker = Worker(
        app,
        queues=queues,
        concurrency=args.concurrency,
        threads=args.threads,
        grace_period=args.grace_period,
        burst=args.burst,
        prefetch=args.prefetch,
        beat=not getattr(args, "no_beat", False),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    metrics = None
    if getattr(args, "metrics_port", None):
        from .metrics import serve_metrics

        metrics = await serve_metrics(worker, args.metrics_port)
    try:
        await worker.run()
    except AqueueError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        if metrics is not None:
            await metrics.close()
        await app.close()
    return 0


def _add_worker_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker",
        description="Run tasks of MODULE:APP from its queues until SIGTERM/SIGINT.",
    )
    p.add_argument("app", metavar="MODULE:APP", help="where the aqueue.App lives, e.g. tasks:app")
    p.add_argument(
        "-c", "--concurrency", type=int, default=100, help="tasks run at once (default 100)"
    )
    p.add_argument(
        "-q",
        "--queues",
        help="comma-separated queues to read (default: every queue the app's tasks use)",
    )
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for plain def tasks (default min(concurrency, 16))",
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="messages read ahead while tasks run, so Redis prepares the next batch "
        "meanwhile (default concurrency/2, at most 100); a worker holds at most "
        "concurrency + prefetch messages",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds running tasks get to finish on SIGTERM before they are handed back "
        "(default 30)",
    )
    p.add_argument(
        "--visibility-timeout",
        type=float,
        default=None,
        help="seconds a delivery stays leased without renewal before other workers "
        "reclaim it (default: the app's, 60)",
    )
    p.add_argument(
        "--burst", action="store_true", help="exit once the queues are empty (scripts, tests)"
    )
    p.add_argument(
        "--no-beat",
        action="store_true",
        help="don't enqueue periodic tasks from this worker (run `aqueue beat` instead)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default info: one line per task)",
    )
    p.set_defaults(func=cmd_worker)
    from .supervisor import add_worker_options

    add_worker_options(p)  # --processes, --pidfile, --logfile, --node, --metrics-port


async def cmd_status(args: argparse.Namespace) -> int:
    app = _app_with_overrides(args)
    async with app:
        info = await app.result(args.id, args.queue).info()
    print(f"{info.id}: {info.status.value}")
    for label, value in (
        ("task", info.name),
        ("queue", info.queue),
        ("attempt", info.attempt or None),
        ("worker", info.worker),
        ("error", info.error),
    ):
        if value:
            print(f"  {label}: {value}")
    return 0 if info.status.value != "unknown" else 1


async def cmd_abort(args: argparse.Namespace) -> int:
    app = _app_with_overrides(args)
    async with app:
        handle = app.result(args.id, args.queue)
        before = await handle.status()
        changed = await handle.abort()
    if changed:
        print(f"{args.id}: abort requested (was {before.value})")
        return 0
    print(f"{args.id}: nothing to abort (status {before.value})")
    return 1


def _add_task_parsers(sub: Any) -> None:
    for name, func, text in (
        ("status", cmd_status, "show one task's state"),
        ("abort", cmd_abort, "abort a queued, scheduled or running task"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("app", metavar="MODULE:APP")
        p.add_argument("id", help="task id")
        p.add_argument("--queue", help="the task's queue (default: search the app's queues)")
        p.add_argument("--url", help="Redis URL")
        p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aqueue", description="aqueue: asyncio task queue on Redis streams"
    )
    parser.add_argument("--version", action="version", version=f"aqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_worker_parser(sub)
    _add_task_parsers(sub)
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(name, __package__)
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"))
    func: Command = args.func
    try:
        return run_async(func(args))
    except KeyboardInterrupt:
        return 130
    except AqueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
