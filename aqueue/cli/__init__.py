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
import gc
import importlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .._version import __version__
from ..core.errors import AqueueError
from .base import load_app, run_async, setup_logging

__all__ = ["COMMAND_GROUPS", "build_parser", "load_app", "main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

#: Each command group's module and the commands it adds, in the order ``aqueue
#: --help`` lists them. A command line that names a command loads only its group:
#: a worker process then holds no other group's modules (and what they import).
COMMAND_GROUPS: dict[str, tuple[str, ...]] = {
    "worker": ("worker",),
    "tasks": ("status", "result", "abort", "enqueue"),
    "queues": ("inspect", "check", "purge"),
    "dead": ("dead",),
    "events": ("events",),
    "beat": ("beat", "schedule"),
    "dashboard": ("dashboard",),
    "multi": ("multi",),
    "demo": ("demo",),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: only the group of the command it names, else every group."""
    parser = argparse.ArgumentParser(
        prog="aqueue", description="aqueue: asyncio task queue on Redis streams"
    )
    parser.add_argument("--version", action="version", version=f"aqueue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _groups_for(argv):
        importlib.import_module(f"{__name__}.{group}").add_parsers(sub)
    return parser


def _groups_for(argv: list[str] | None) -> list[str]:
    """The command groups a parser for ``argv`` needs (all of them for ``--help``,
    ``--version``, a mistyped command or none)."""
    if argv:
        for group, commands in COMMAND_GROUPS.items():
            if argv[0] in commands:
                return [group]
    return list(COMMAND_GROUPS)


def main(argv: list[str] | None = None) -> int:
    # This process is the command (not a program calling main()): what it imports
    # now, the command's modules (for a worker, redis-py and the runtime), lives as
    # long as the process. Collecting while importing would only walk it, and
    # later full collections would walk it again: it goes to the permanent
    # generation instead, uncollected (a few hundred import-time cycles, ~0.1 MiB,
    # are kept with it).
    settle = argv is None and gc.isenabled()
    if argv is None:
        argv = sys.argv[1:]
    if settle:
        gc.disable()
    try:
        args = build_parser(argv).parse_args(argv)
    finally:
        if settle:
            gc.freeze()
            gc.enable()
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
        from .._redis.errors import explain as explain_redis_error

        mistake = explain_redis_error(exc)
        if mistake is None:
            raise
        print(f"error: {mistake}", file=sys.stderr)
        return 1
