"""``aqueue worker``: one worker process, or several under a supervisor.

``aqueue worker tasks:app`` (or ``-A tasks:app``) runs one
:class:`~aqueue.Worker` until SIGTERM/SIGINT; a second signal stops at once.
``--processes N`` runs N of them under a :class:`~.supervisor.Supervisor`
that restarts crashed ones. Signal handlers are installed here, never by the
library.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from ..core.errors import AqueueError
from ..runtime.monitor import NODE_ENV
from ..runtime.tuning import settle_heap
from ..runtime.worker import Worker
from .base import (
    LOG_FORMATS,
    add_app_option,
    setup_logging,
    split_queues,
    target_from_args,
)
from .pidfiles import RECYCLE_EXIT, SUPERVISOR_ENV, expand, node_name, pidfile

if TYPE_CHECKING:
    from ..runtime.metrics import MetricsServer

__all__ = ["add_parsers", "run_worker", "start"]

logger = logging.getLogger("aqueue.cli")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run a worker",
        description="Run tasks of MODULE:APP from its queues until SIGTERM/SIGINT.",
    )
    p.add_argument(
        "app", nargs="?", metavar="MODULE:APP", help="where the aqueue.App lives, e.g. tasks:app"
    )
    add_app_option(p, required=True)
    p.add_argument(
        "-c", "--concurrency", type=int, default=100, help="tasks run at once (default 100)"
    )
    p.add_argument(
        "-q",
        "--queues",
        help="comma-separated queues to read (default: every queue the app's tasks use)",
    )
    p.add_argument("--url", help="Redis URL (default: the app's, or AQUEUE_REDIS_URL)")
    p.add_argument("--prefix", help="key prefix (default: the app's, or AQUEUE_PREFIX)")
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
    p.add_argument(
        "--log-format",
        default="text",
        choices=list(LOG_FORMATS),
        help="text (default) for people; json: one JSON object per line with the task id, "
        "name, queue, attempt, outcome and duration, for log pipelines",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="run N worker processes under a supervisor that restarts crashed ones",
    )
    p.add_argument(
        "--task-processes",
        type=int,
        default=None,
        metavar="N",
        help="task processes for executor='process' tasks (default: one per CPU)",
    )
    p.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=None,
        metavar="N",
        help="a worker process that began N tasks drains and is replaced by a fresh one "
        "(against leaks; without --processes, a supervisor runs one child)",
    )
    p.add_argument(
        "--max-memory-per-child",
        type=float,
        default=None,
        metavar="MB",
        help="a worker process over MB MiB resident drains and is replaced by a fresh one "
        "(checked every second; without --processes, a supervisor runs one child)",
    )
    p.add_argument(
        "--node",
        default=None,
        help="node name shown by `aqueue inspect` (default: the host name)",
    )
    p.add_argument(
        "--pidfile",
        default=None,
        help="write the pid here and refuse to start if it names a live worker; "
        "%%n = node name, %%i = process index (0: supervisor)",
    )
    p.add_argument(
        "--logfile",
        default=None,
        help="log to this file instead of stderr; %%n and %%i as for --pidfile",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (with --processes, "
        "child i uses PORT+i-1); needs the 'metrics' extra",
    )
    p.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="address the metrics server listens on (default 0.0.0.0, every interface; "
        "127.0.0.1 keeps it on this host)",
    )
    p.set_defaults(func=start, worker_parser=p)


async def start(args: argparse.Namespace) -> int:
    """``aqueue worker``: one worker, or a supervisor when ``--processes`` is given."""
    node = node_name(args)
    os.environ[NODE_ENV] = node
    index = int(os.environ.get("AQUEUE_PROCESS_INDEX", "0"))
    if args.logfile:
        setup_logging(args.log_level, expand(args.logfile, node, index), args.log_format)
    supervisor_pid = os.environ.pop(SUPERVISOR_ENV, None)
    watchdog = None
    if supervisor_pid is not None and int(supervisor_pid) == os.getppid():
        watchdog = asyncio.create_task(_stop_with_parent(int(supervisor_pid)))
    try:
        with pidfile(expand(args.pidfile, node, index) if args.pidfile else None):
            recycling = args.max_tasks_per_child is not None or (
                args.max_memory_per_child is not None
            )
            if args.max_tasks_per_child is not None and args.max_tasks_per_child < 1:
                raise SystemExit("error: --max-tasks-per-child must be at least 1")
            if args.task_processes is not None and args.task_processes < 1:
                raise SystemExit("error: --task-processes must be at least 1")
            if args.max_memory_per_child is not None and not args.max_memory_per_child > 0:
                raise SystemExit("error: --max-memory-per-child must be a positive number of MB")
            if args.processes is not None or (recycling and supervisor_pid is None):
                # A recycled child needs someone to start its replacement.
                if args.processes is not None and args.processes < 1:
                    raise SystemExit("error: --processes must be at least 1")
                from .supervisor import Supervisor  # not loaded by a single worker

                return await Supervisor(args, node).run()
            return await run_worker(args)
    except _ExitNow as exit_now:
        # Threads running task code can't be stopped, and the interpreter would
        # wait for them at exit, for ever if one never returns: leave without
        # them. Their tasks kept their lease and are reclaimed by other workers.
        logging.shutdown()
        os._exit(exit_now.code)
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def run_worker(args: argparse.Namespace) -> int:
    """One worker in this process, stopped by SIGTERM/SIGINT."""
    app = target_from_args(args, args.app, required=True).app
    worker = Worker(
        app,
        queues=split_queues(args.queues),
        concurrency=args.concurrency,
        threads=args.threads,
        grace_period=args.grace_period,
        burst=args.burst,
        prefetch=args.prefetch,
        beat=not args.no_beat,
        max_tasks=args.max_tasks_per_child,
        max_memory_mb=args.max_memory_per_child,
        task_processes=args.task_processes,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    metrics: MetricsServer | None = None
    code = 0
    try:
        if args.metrics_port:
            from ..runtime.metrics import serve_metrics  # prometheus only when asked for

            metrics = await serve_metrics(worker, args.metrics_port, args.metrics_host)
        # What exists now lives as long as the process: keep it out of later collections.
        settle_heap()
        await worker.run()
        if worker.recycled is not None:
            code = RECYCLE_EXIT  # the supervisor starts a fresh process at once
    except AqueueError as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        if metrics is not None:
            await metrics.close()
        await app.close()
    if worker.abandoned:
        logger.warning(
            "exiting now, leaving %d task(s) running in threads to be reclaimed", worker.abandoned
        )
        raise _ExitNow(code)
    return code


class _ExitNow(Exception):
    """Leave the process at once with ``code`` (tasks are still running in threads)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


async def _stop_with_parent(parent: int) -> None:
    """A supervised child drains and exits when its supervisor is gone (even SIGKILLed).

    Children run in process groups of their own, so a terminal's Ctrl-C reaches
    only the supervisor, which forwards it once.
    """
    while True:  # no event announces a parent's death: poll the parent pid
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            break
    logger.warning("supervisor %d is gone; stopping this worker gracefully", parent)
    os.kill(os.getpid(), signal.SIGTERM)
