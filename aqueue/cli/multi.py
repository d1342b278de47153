"""``aqueue multi``: start, stop, restart and list detached named workers.

Each NAME becomes one detached ``aqueue worker --node NAME`` process (or a
supervisor of several with ``--processes``) that writes its own pidfile. The
pidfile is the only state: ``stop`` sends SIGTERM to the pid in it and waits
for the graceful drain, ``status`` reads it, and a pidfile whose process is
gone (or is no longer an aqueue process) is reported as stale and removed.

::

    aqueue multi start w1 w2 --app proj.tasks:app --pidfile /run/aqueue/%n.pid \\
        --logfile /var/log/aqueue/%n.log -c 200
    aqueue multi status w1 w2 --pidfile /run/aqueue/%n.pid
    aqueue multi stop w1 w2 --pidfile /run/aqueue/%n.pid --timeout 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .base import APP_ENV, help_text
from .pidfiles import expand, pid_alive, read_pidfile

__all__ = ["add_parsers"]

#: Worker options ``multi`` passes through to each worker: (flags, dest, kind).
_PASSTHROUGH: list[tuple[tuple[str, ...], str, Any]] = [
    (("-c", "--concurrency"), "concurrency", int),
    (("-q", "--queues"), "queues", str),
    (("--url",), "url", str),
    (("--threads",), "threads", int),
    (("--prefetch",), "prefetch", int),
    (("--grace-period",), "grace_period", float),
    (("--visibility-timeout",), "visibility_timeout", float),
    (("--processes",), "processes", int),
]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "multi",
        help="start/stop/restart/status of detached named workers (pidfiles)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["start", "stop", "restart", "status"])
    p.add_argument("names", nargs="+", metavar="NAME", help="node names (e.g. w1 w2)")
    p.add_argument(
        "-A", "--app", help="MODULE:APP (needed by start and restart; default AQUEUE_APP)"
    )
    p.add_argument(
        "--pidfile",
        default="%n.pid",
        help="pidfile pattern, %%n = node name, %%i = process index (default %%n.pid)",
    )
    p.add_argument(
        "--logfile",
        default="%n.log",
        help="logfile pattern (default %%n.log); with --processes, %%i gives each child "
        "its own file",
    )
    p.add_argument(
        "--loglevel",
        "--log-level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds stop waits for a graceful drain before reporting (default 60)",
    )
    p.add_argument(
        "--kill", action="store_true", help="SIGKILL workers still running after --timeout"
    )
    for flags, dest, kind in _PASSTHROUGH:
        p.add_argument(
            *flags, dest=dest, type=kind, default=None, help="passed to each `aqueue worker`"
        )
    p.set_defaults(func=cmd_multi)


def _logfile(pattern: str, name: str) -> str:
    return expand(pattern, name, 0)


def _worker_command(args: argparse.Namespace, name: str) -> list[str]:
    cmd = [sys.executable, "-m", "aqueue", "worker", args.app, "--node", name]
    cmd += ["--pidfile", expand(args.pidfile, name, 0)]
    # %i is left for the worker: with --processes each child fills in its index.
    cmd += ["--logfile", args.logfile.replace("%n", name)]
    cmd += ["--log-level", args.log_level]
    for flags, dest, _kind in _PASSTHROUGH:
        value = getattr(args, dest)
        if value is not None:
            cmd += [flags[-1], str(value)]
    return cmd


def _state(pidfile: str) -> tuple[str, int | None]:
    """('running', pid), ('stale', pid) or ('stopped', None)."""
    pid = read_pidfile(pidfile)
    if pid is None:
        return "stopped", None
    return ("running", pid) if pid_alive(pid) else ("stale", pid)


def _remove_stale(name: str, pidfile: str, pid: int | None) -> None:
    print(f"{name}: stale pidfile {pidfile} (pid {pid} is not running); removed")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)


def _spawn_detached(cmd: list[str], logfile: str) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # detached: no controlling terminal, own group
            close_fds=True,
        )


async def _start(args: argparse.Namespace, name: str) -> bool:
    pidfile = expand(args.pidfile, name, 0)
    state, pid = _state(pidfile)
    if state == "running":
        print(f"{name}: already running (pid {pid})")
        return True
    if state == "stale":
        _remove_stale(name, pidfile, pid)
    cmd = _worker_command(args, name)
    logfile = _logfile(args.logfile, name)
    Path(logfile).parent.mkdir(parents=True, exist_ok=True)
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    proc = _spawn_detached(cmd, logfile)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if read_pidfile(pidfile) == proc.pid:
            print(f"{name}: started (pid {proc.pid}, log {logfile})")
            return True
        if proc.poll() is not None:
            print(
                f"{name}: failed to start (exit code {proc.returncode}); see {logfile}",
                file=sys.stderr,
            )
            return False
        await asyncio.sleep(0.05)
    print(f"{name}: no pidfile {pidfile} after 15s; see {logfile}", file=sys.stderr)
    return False


async def _stop(args: argparse.Namespace, name: str) -> bool:
    pidfile = expand(args.pidfile, name, 0)
    state, pid = _state(pidfile)
    if state == "stopped":
        print(f"{name}: not running")
        return True
    if state == "stale":
        _remove_stale(name, pidfile, pid)
        return True
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    print(f"{name}: stopping (pid {pid}), waiting up to {args.timeout:.0f}s for running tasks")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                if read_pidfile(pidfile) == pid:
                    os.unlink(pidfile)
            print(f"{name}: stopped")
            return True
        await asyncio.sleep(0.1)
    if args.kill:
        for victim in [pid, *_children_of(pid)]:  # a supervisor's children too
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        print(f"{name}: still running after {args.timeout:.0f}s; killed (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pidfile)
        return True
    print(
        f"{name}: still running after {args.timeout:.0f}s (pid {pid}); its tasks have not "
        f"finished draining. Wait, or use --kill",
        file=sys.stderr,
    )
    return False


def _children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _status(args: argparse.Namespace, name: str) -> bool:
    pidfile = expand(args.pidfile, name, 0)
    state, pid = _state(pidfile)
    if state == "running":
        print(f"{name}: running (pid {pid})")
        return True
    if state == "stale":
        print(f"{name}: stale pidfile {pidfile} (pid {pid} is not running)")
        return False
    print(f"{name}: stopped")
    return False


async def cmd_multi(args: argparse.Namespace) -> int:
    args.app = args.app or os.environ.get(APP_ENV)
    if args.action in ("start", "restart") and not args.app:
        print(f"error: multi {args.action} needs --app MODULE:APP", file=sys.stderr)
        return 2
    ok = True
    for name in args.names:
        if args.action == "status":
            ok = _status(args, name) and ok
        elif args.action == "start":
            ok = await _start(args, name) and ok
        elif args.action == "stop":
            ok = await _stop(args, name) and ok
        else:
            ok = await _stop(args, name) and await _start(args, name) and ok
    return 0 if ok else 1
