"""Pidfiles, node names and the exit code of a recycled worker: what every worker uses.

``--pidfile`` / ``--logfile`` take ``%n`` (the node name), ``%h`` (the host
name) and ``%i`` (the process index: 0 is the supervisor or a single
worker, 1..N are children). A worker without ``--processes`` loads this
module, not the :mod:`.supervisor`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..runtime.monitor import NODE_ENV

__all__ = [
    "RECYCLE_EXIT",
    "SUPERVISOR_ENV",
    "expand",
    "node_name",
    "pid_alive",
    "pidfile",
    "read_pidfile",
]

#: Tells a child which supervisor started it (see ``_stop_with_parent``).
SUPERVISOR_ENV = "AQUEUE_SUPERVISOR_PID"
#: A child's exit code after it drained at ``--max-tasks-per-child`` or
#: ``--max-memory-per-child``: replace it at once, it did not crash.
RECYCLE_EXIT = 75


def expand(pattern: str, node: str, index: int) -> str:
    """Fill in ``%n`` (node name), ``%h`` (host name) and ``%i`` (process index)."""
    out = pattern.replace("%n", node).replace("%h", socket.gethostname())
    return out.replace("%i", str(index))


def node_name(args: argparse.Namespace) -> str:
    return str(args.node or os.environ.get(NODE_ENV) or socket.gethostname())


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process that looks like an aqueue worker."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a recycled pid of an unrelated process is stale too
        try:
            text = cmdline.read_bytes()
        except OSError:
            return False
        if not text:  # a zombie: exited, not yet reaped
            return False
        return b"aqueue" in text
    return True


def read_pidfile(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Hold a pidfile for the life of the block; refuse if a live process owns it."""
    if not path:
        yield
        return
    existing = read_pidfile(path)
    if existing is not None and existing != os.getpid() and pid_alive(existing):
        raise SystemExit(f"error: {path} says pid {existing} is running; not starting")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    Path(tmp).write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)
    try:
        yield
    finally:
        if read_pidfile(path) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(path)
