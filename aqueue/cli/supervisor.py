"""``aqueue worker --processes N``: several worker processes under one supervisor.

The supervisor starts N children, each ``python -m aqueue worker`` with the
same options (minus ``--processes``), restarts a child that dies with an
exponential backoff, and forwards SIGTERM/SIGINT so every child drains
gracefully; a second signal is forwarded too, which makes children stop at
once. If children keep dying right after they start, the supervisor gives
up, stops the others and exits non-zero, so a process manager notices.
A child that drained at ``--max-tasks-per-child`` or ``--max-memory-per-child``
exits with :data:`RECYCLE_EXIT` and is replaced at once (no backoff).

``--pidfile`` / ``--logfile`` and ``--node`` (the name ``aqueue inspect`` and
``aqueue multi`` know the worker by) are in :mod:`.pidfiles`, which a single
worker loads without this module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from ..runtime.monitor import NODE_ENV
from .pidfiles import RECYCLE_EXIT, SUPERVISOR_ENV, expand

__all__ = ["Supervisor", "child_argv"]

logger = logging.getLogger("aqueue.supervisor")

#: A child that ran at least this long before dying resets its backoff.
STABLE_AFTER = 30.0
#: Consecutive quick deaths of one child before the supervisor gives up.
MAX_QUICK_DEATHS = 5
#: Extra seconds a child gets beyond its grace period before it is killed.
KILL_MARGIN = 15.0


def child_argv(args: argparse.Namespace, skip: set[str]) -> list[str]:
    """Rebuild a command line for the worker parser from parsed ``args``."""
    parser: argparse.ArgumentParser = args.worker_parser
    positional: list[str] = []
    options: list[str] = []
    for action in parser._actions:
        if action.dest in skip or action.dest in ("help", "func", "command", "worker_parser"):
            continue
        value = getattr(args, action.dest, None)
        if not action.option_strings:
            if value is not None:
                positional.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                options.append(action.option_strings[-1])
        elif value is not None and value != action.default:
            options += [action.option_strings[-1], str(value)]
    return positional + options


@dataclass
class _Child:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    done: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Keeps N ``aqueue worker`` children running until told to stop."""

    def __init__(self, args: argparse.Namespace, node: str) -> None:
        self.args = args
        self.node = node
        # Recycling without --processes: one child, replaced when it recycles.
        self.children = [_Child(i) for i in range(1, (args.processes or 1) + 1)]
        self.stopping = False
        self.gave_up = False
        self._signals = 0
        self._all_done = asyncio.Event()

    def _command(self, child: _Child) -> tuple[list[str], dict[str, str]]:
        argv = child_argv(self.args, {"processes", "pidfile", "logfile", "metrics_port", "node"})
        args = self.args
        if args.logfile:
            argv += ["--logfile", expand(args.logfile, self.node, child.index)]
        if args.pidfile and "%i" in args.pidfile:
            argv += ["--pidfile", expand(args.pidfile, self.node, child.index)]
        if args.metrics_port:
            argv += ["--metrics-port", str(args.metrics_port + child.index - 1)]
        env = dict(os.environ)
        env[NODE_ENV] = self.node
        env["AQUEUE_PROCESS_INDEX"] = str(child.index)
        return [sys.executable, "-m", "aqueue", "worker", *argv], env

    async def _spawn(self, child: _Child) -> None:
        cmd, env = self._command(child)
        env[SUPERVISOR_ENV] = str(os.getpid())
        child.proc = await asyncio.create_subprocess_exec(*cmd, env=env, start_new_session=True)
        child.started = time.monotonic()
        logger.info("supervisor: started worker process %d (pid %d)", child.index, child.proc.pid)

    async def _watch(self, child: _Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            lived = time.monotonic() - child.started
            if self.stopping:
                break
            if code == 0:
                logger.info("supervisor: worker process %d finished", child.index)
                break
            if code == RECYCLE_EXIT:
                logger.info(
                    "supervisor: worker process %d (pid %d) recycled; starting a fresh one",
                    child.index,
                    child.proc.pid,
                )
                child.restarts += 1
                await self._spawn(child)
                continue
            child.quick_deaths = 0 if lived >= STABLE_AFTER else child.quick_deaths + 1
            if child.quick_deaths >= MAX_QUICK_DEATHS:
                logger.error(
                    "supervisor: worker process %d died %d times in a row right after "
                    "starting (last exit code %d); giving up",
                    child.index,
                    child.quick_deaths,
                    code,
                )
                self.gave_up = True
                self.stop(signal.SIGTERM)
                break
            delay = min(0.25 * 2 ** max(0, child.quick_deaths - 1), 30.0)
            logger.warning(
                "supervisor: worker process %d (pid %d) exited with code %d; restarting in %.1fs",
                child.index,
                child.proc.pid,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            if self.stopping:
                break
            child.restarts += 1
            await self._spawn(child)
        child.done = True
        if all(c.done for c in self.children):
            self._all_done.set()

    def stop(self, sig: int) -> None:
        """Forward a stop signal to every child (the second one stops them at once)."""
        self.stopping = True
        self._signals += 1
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        logger.info(
            "supervisor %d: running %d worker processes (node %s)",
            os.getpid(),
            len(self.children),
            self.node,
        )
        for child in self.children:
            await self._spawn(child)
            child.watcher = asyncio.create_task(self._watch(child))
        await self._stopped_or_done()
        grace = float(getattr(self.args, "grace_period", 30.0) or 30.0)
        try:
            await asyncio.wait_for(self._all_done.wait(), grace + KILL_MARGIN)
        except TimeoutError:
            for child in self.children:
                if child.proc is not None and child.proc.returncode is None:
                    logger.error("supervisor: killing worker process %d", child.index)
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.kill()
            await asyncio.gather(
                *(c.proc.wait() for c in self.children if c.proc is not None),
                return_exceptions=True,
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        logger.info("supervisor: all worker processes stopped")
        return 1 if self.gave_up else 0

    async def _stopped_or_done(self) -> None:
        while not self.stopping and not self._all_done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_done.wait(), 0.2)
