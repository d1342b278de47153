"""The ``aqueue`` command: a thin face over the library, one module per command group.

==========  ==========================================================
module      commands
==========  ==========================================================
worker      ``worker`` (``--processes``: :mod:`.supervisor`)
multi       ``multi start|stop|restart|status``
tasks       ``status``, ``result``, ``abort``, ``enqueue``
queues      ``inspect``, ``check``, ``purge``
dead        ``dead list|replay|purge``
events      ``events``
beat        ``beat``, ``schedule``
dashboard   ``dashboard``
demo        ``demo``
==========  ==========================================================

Argument parsing, signal handlers and log handlers live here and nowhere
else in the package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .._redis.errors import explain as explain_redis_error
from .._version import __version__
from ..core.errors import AqueueError
from . import beat, dashboard, dead, demo, events, multi, queues, tasks, worker
from .base import load_app, run_async, setup_logging

__all__ = ["build_parser", "load_app", "main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: The command groups, in the order ``aqueue --help`` lists them.
COMMAND_GROUPS = (worker, tasks, queues, dead, events, beat, dashboard, multi, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aqueue", description="aqueue: asyncio task queue on Redis streams"
    )
    parser.add_argument("--version", action="version", version=f"aqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", "info"), fmt=getattr(args, "log_format", "text"))
    func: Command = args.func
    try:
        return run_async(func(args))
    except KeyboardInterrupt:
        return 130
    except AqueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`aqueue inspect --json | head`): nothing to report.
        # Point stdout at /dev/null so the interpreter's final flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        mistake = explain_redis_error(exc)
        if mistake is None:
            raise
        print(f"error: {mistake}", file=sys.stderr)
        return 1
