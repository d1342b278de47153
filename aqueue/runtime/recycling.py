"""Worker recycling: a worker that reached its task or memory limit drains and leaves.

``aqueue worker --max-tasks-per-child N`` and ``--max-memory-per-child MB``
keep a leaking task from growing a worker for ever. A worker at its limit
begins no more tasks, lets the running ones finish, hands back what it read
ahead (another worker, or its replacement, runs those) and stops; its
supervisor starts a fresh process in its place. Nothing is lost: it is the
same graceful stop as SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections.abc import Callable

__all__ = ["MEMORY_CHECK_INTERVAL", "resident_mb", "watch_memory"]

#: How often a worker with a memory limit looks at its size (seconds).
MEMORY_CHECK_INTERVAL = 1.0

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb() -> float:
    """This process's resident memory now, in MiB (its peak where "now" is unknown)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


async def watch_memory(limit_mb: float, at_limit: Callable[[str], None]) -> None:
    """Call ``at_limit(reason)`` once this process uses more than ``limit_mb`` MiB."""
    while True:
        used = resident_mb()
        if used > limit_mb:
            at_limit(f"{used:.0f} MiB resident, over --max-memory-per-child {limit_mb:g}")
            return
        await asyncio.sleep(MEMORY_CHECK_INTERVAL)
