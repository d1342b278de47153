"""What every ``aqueue`` command shares: finding the App, Redis options, logging, the loop.

Operator commands name their App the way Celery users expect: ``-A/--app
MODULE:APP`` (or ``AQUEUE_APP``), or the older positional ``MODULE:APP``.
Most of them need no App at all: with only ``--url`` (or
``AQUEUE_REDIS_URL``) and ``--prefix`` they look at what is in Redis, and
find the queues there. An App is needed for what only code knows: task
names and signatures, periodic schedules, a signing key.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import did_you_mean

if TYPE_CHECKING:
    from ..app import App

__all__ = [
    "APP_ENV",
    "LOG_FORMATS",
    "Target",
    "add_app_option",
    "add_redis_options",
    "add_target_arguments",
    "load_app",
    "looks_like_app",
    "run_async",
    "setup_logging",
    "split_queues",
    "target_from_args",
]

#: Environment variable naming the App when ``-A/--app`` is not given.
APP_ENV = "AQUEUE_APP"

_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
_ENTRY_ID = re.compile(r"^\d+-\d+$")


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (default attribute ``app``) and return the App."""
    from ..app import App  # loaded by the commands that use an App, not by `aqueue --help`

    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise SystemExit(
                f"error: can't import {module_name!r} ({exc}). Run from the directory that "
                f"contains it, or set PYTHONPATH"
            ) from None
        raise SystemExit(_import_failed(module_name, exc)) from None
    except Exception as exc:  # the module itself raised while importing
        raise SystemExit(_import_failed(module_name, exc)) from None
    app = getattr(module, attr, None)
    if app is None and not hasattr(module, attr):
        apps = [name for name, value in vars(module).items() if isinstance(value, App)]
        hint = did_you_mean(attr, apps) or (
            f"; it has {', '.join(repr(a) for a in apps)}" if apps else ""
        )
        raise SystemExit(f"error: module {module_name!r} has no attribute {attr!r}{hint}")
    if not isinstance(app, App):
        raise SystemExit(f"error: {spec!r} is not an aqueue.App (found {type(app).__name__})")
    return app


def _import_failed(module_name: str, exc: BaseException) -> str:
    """The error a module raised while importing, with the file and line it came from."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    elif frames:
        last = frames[-1]
        where = f" at {last.filename}:{last.lineno}"
        if last.line:
            where += f" ({last.line.strip()})"
    return (
        f"error: importing {module_name!r} failed{where}: {type(exc).__name__}: {exc}. "
        "Fix that error in the module (or install what it needs)"
    )


def help_text(doc: str | None) -> str:
    """A module docstring as a command's ``--help`` text, without reStructuredText markup."""
    text = doc or ""
    text = re.sub(r":\w+:`~?\.*([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    text = re.sub(r"(?m)^::$", "For example:", text)
    return re.sub(r"(?m)(\S)::$", r"\1:", text)


def looks_like_app(text: str) -> bool:
    """True for ``pkg.module:app`` (a stream entry id like ``1700000000000-0`` is not)."""
    return ":" in text and bool(_APP_SPEC.match(text)) and not _ENTRY_ID.match(text)


def add_app_option(p: argparse.ArgumentParser, required: bool = False) -> None:
    what = "where the aqueue.App lives, e.g. tasks:app"
    if not required:
        what += " (optional: without it, queues are found in Redis)"
    p.add_argument("-A", "--app", dest="app_option", metavar="MODULE:APP", help=what)


def add_redis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (default: the app's, or AQUEUE_PREFIX)")


def add_target_arguments(
    p: argparse.ArgumentParser, positional_app: bool = True, required: bool = False
) -> None:
    """``[MODULE:APP]``, ``-A/--app``, ``--url`` and ``--prefix``: where a command looks."""
    if positional_app:
        help_text = "the App (or -A)" if required else "optional: the App"
        p.add_argument("app", nargs="?", metavar="MODULE:APP", help=help_text)
    add_app_option(p, required)
    add_redis_options(p)


def split_queues(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [q.strip() for q in text.split(",") if q.strip()] or None


class Target:
    """The App a command works on, and whether it came from code or only from Redis options."""

    __slots__ = ("app", "from_code")

    def __init__(self, app: App, from_code: bool) -> None:
        self.app = app
        self.from_code = from_code

    async def queues(self, wanted: Sequence[str] | None = None) -> list[str]:
        """``wanted``, else the App's queues and every other queue in the registry,
        else every queue found in Redis."""
        if wanted:
            return list(wanted)
        if self.from_code:
            declared = self.app.queues
            registered = await self.app.client.views.registered_queues()
            return declared + [q for q in registered if q not in declared]
        found = await self.app.client.views.discover_queues()
        return found or [self.app.settings.default_queue]

    async def served_queues(self, wanted: Sequence[str] | None = None) -> list[str]:
        """The queues that must have a worker: ``wanted``, else the App's, else all found."""
        if wanted:
            return list(wanted)
        if self.from_code:
            return self.app.queues
        return await self.queues()


def target_from_args(
    args: argparse.Namespace, positional: str | None = None, required: bool = False
) -> Target:
    """The App named by ``-A/--app``, ``positional`` or ``AQUEUE_APP``, with
    ``--url``, ``--prefix`` and ``--visibility-timeout`` applied; without one,
    an App made from the Redis options alone (unless ``required``)."""
    from ..app import App

    spec = getattr(args, "app_option", None) or positional or os.environ.get(APP_ENV)
    if spec:
        app = load_app(spec)
        from_code = True
    elif required:
        raise SystemExit(
            f"error: aqueue {args.command} needs the App: -A MODULE:APP (or {APP_ENV})"
        )
    else:
        app = App()
        from_code = False
    overrides: dict[str, Any] = {}
    if getattr(args, "url", None):
        overrides["redis_url"] = args.url
    if getattr(args, "prefix", None):
        overrides["prefix"] = args.prefix
    if getattr(args, "visibility_timeout", None):
        overrides["visibility_timeout"] = args.visibility_timeout
    if overrides:
        app.configure(**overrides)
    return Target(app, from_code)


def json_formatter() -> logging.Formatter:
    """One JSON object per line, from python-json-logger (``aqueue[json-logs]``):
    ``level``, ``logger``, ``message``, the record's ``extra=`` fields (for a
    task run: ``task_id``, ``task_name``, ``queue``, ``attempt``, ``outcome``,
    ``duration_ms``), ``exception`` with the traceback if any, and ``time``
    (UTC, ISO 8601)."""
    try:
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        print(
            "error: --log-format json needs python-json-logger: pip install 'aqueue[json-logs]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    formatter: logging.Formatter = JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp="time",
        reserved_attrs=[*RESERVED_ATTRS, "taskName"],
    )
    return formatter


#: ``--log-format`` choices: how each one formats a record.
LOG_FORMATS: dict[str, Callable[[], logging.Formatter]] = {
    "text": lambda: logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"),
    "json": json_formatter,
}


def setup_logging(level: str, logfile: str | None = None, fmt: str = "text") -> None:
    handler: logging.Handler = (
        logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(LOG_FORMATS[fmt]())
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
