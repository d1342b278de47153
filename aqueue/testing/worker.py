"""A worker for tests: run what is due until nothing is left, one task, or inspect the queues.

:class:`TestWorker` runs the real :class:`~aqueue.runtime.worker.Worker` in
burst mode on the test's event loop, so a test goes through the same fetch,
execute and finish steps (and Lua scripts) as production. It also reads
what is still waiting, decoded with the task's annotations, and keeps the
outcomes of everything it ran.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import pprint
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.errors import AqueueError
from ..core.protocol import FinishItem, decode_error
from ..core.status import TaskStatus
from ..runtime.executor import Job
from ..runtime.running import Running
from ..runtime.worker import Worker
from .diffs import call_text, closest_diff, list_diff

if TYPE_CHECKING:
    from ..app import App
    from ..task import Task

__all__ = ["EnqueuedTask", "FinishedTask", "TestWorker", "WorkStuck"]

logger = logging.getLogger(__name__)

_args_decoder = msgspec.msgpack.Decoder(list[Any])
_kwargs_decoder = msgspec.msgpack.Decoder(dict[str, Any])

#: Seconds ``run_until_idle()`` and ``run_one()`` wait before calling work stuck.
DEFAULT_BOUND = 30.0


class WorkStuck(AqueueError):
    """Work did not finish within the bound given to ``run_until_idle()`` / ``run_one()``."""


@dataclass(frozen=True, slots=True)
class EnqueuedTask:
    """A message waiting in a queue, its arguments decoded as the worker would."""

    id: str
    task: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    due_at: datetime | None = None
    """None: runs as soon as a worker reads it; else when it becomes due."""
    retries: int = 0

    def describe(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        when = f" due {self.due_at.isoformat()}" if self.due_at else ""
        return f"{self.task}({call}){when} [{self.id}]"


@dataclass(slots=True)
class FinishedTask:
    """One run a :class:`TestWorker` recorded (a retry is a run of its own)."""

    id: str
    task: str | None
    status: TaskStatus
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    value: Any = None
    error: str | None = None
    """``Type: message`` of a failure, a retry or a dead letter."""

    def describe(self) -> str:
        outcome = f"-> {self.value!r}" if self.status is TaskStatus.SUCCEEDED else self.error
        return (
            f"{self.task or '?'}[{self.id}] attempt {self.attempt}: {self.status.value} {outcome}"
        )


class _Recorder:
    """The worker's observer: keeps every outcome; with ``only_one``, stops the
    worker as the first task begins, so it fetches nothing more and lets that
    one finish."""

    def __init__(self, worker: Worker, into: list[FinishedTask], only_one: bool) -> None:
        self.worker = worker
        self.into = into
        self.only_one = only_one
        self.begun = 0

    def started(self, job: Job) -> None:
        self.begun += 1
        if self.only_one and self.begun == 1:
            self.worker.stop()

    def finished(self, item: FinishItem, running: Running | None) -> None:
        self.into.append(_finished(item, running.job if running is not None else None))


def _finished(item: FinishItem, job: Job | None) -> FinishedTask:
    value: Any = None
    error = None
    if item.state is TaskStatus.SUCCEEDED and item.result:
        decoder = job.task.result_decoder() if job is not None else msgspec.msgpack.Decoder()
        try:
            value = decoder.decode(item.result)
        except msgspec.ValidationError:
            value = msgspec.msgpack.decode(item.result)
    if item.error:
        info = decode_error(item.error)
        error = f"{info.type}: {info.message}"
    args, kwargs = _as_called(job.task, job.args, job.kwargs) if job is not None else ((), {})
    return FinishedTask(
        id=item.task_id,
        task=job.display_name if job is not None else None,
        status=item.state,
        args=args,
        kwargs=kwargs,
        attempt=job.attempt if job is not None else 0,
        value=value,
        error=error,
    )


class TestWorker:
    """Runs an App's tasks on the running event loop, on demand.

    ``await run_until_idle()`` runs everything that is due, including what
    the tasks enqueue, and returns once the queues are empty and nothing
    runs; ``await run_one()`` runs a single task. Both raise
    :class:`WorkStuck` naming what still runs after ``timeout`` seconds.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, app: App, *, queues: Sequence[str] | None = None) -> None:
        self.app = app
        self.queues = list(queues) if queues is not None else None
        self._finished: list[FinishedTask] = []

    # -- running --------------------------------------------------------------------

    async def run_until_idle(self, timeout: float = DEFAULT_BOUND) -> list[FinishedTask]:  # noqa: ASYNC109
        """Run everything due until the queues are empty; returns what ran in this call."""
        worker = Worker(self.app, queues=self.queues, burst=True, name=self._name())
        return await self._run(worker, False, timeout, "run_until_idle()")

    async def run_one(self, timeout: float = DEFAULT_BOUND) -> FinishedTask | None:  # noqa: ASYNC109
        """Run one task that is due (from the first queue holding one); None when none is."""
        now = self.app.client.clock()  # a test clock's time when one is installed
        views = self.app.client.views
        for queue in self.queues or self.app.queues:
            waiting = await views.waiting_messages(queue, limit=1000)
            if any(due is None or due <= now for _, due in waiting):
                # One queue, one slot: the worker holds nothing but the task it runs.
                worker = Worker(
                    self.app,
                    queues=[queue],
                    burst=True,
                    concurrency=1,
                    grace_period=timeout,
                    name=self._name(),
                )
                ran = await self._run(worker, True, timeout, "run_one()")
                return ran[0] if ran else None
        return None

    async def _run(
        self, worker: Worker, only_one: bool, bound: float, what: str
    ) -> list[FinishedTask]:
        ran: list[FinishedTask] = []
        worker.observer = _Recorder(worker, ran, only_one)
        run = asyncio.create_task(worker.run(), name="aqueue-test-worker")
        try:
            done, _ = await asyncio.wait({run}, timeout=bound)
            if run in done:
                run.result()
                return ran
            running = worker.describe().get("running", [])
            worker.stop()
            worker.stop()  # the second request cancels what still runs
            await asyncio.wait({run}, timeout=10.0)
            raise WorkStuck(_stuck_message(what, bound, running, ran))
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            self._finished += ran

    def _name(self) -> str:
        return f"aqueue-testing:{id(self):x}"

    # -- looking -------------------------------------------------------------------

    def results(self) -> list[FinishedTask]:
        """Every run this worker recorded, oldest first (retries included)."""
        return list(self._finished)

    async def enqueued(
        self, task: Task[Any, Any] | str | None = None, *, queue: str | None = None
    ) -> list[EnqueuedTask]:
        """What waits in the queues (of ``task``, or ``queue``, or every App queue).

        Arguments are decoded with the task's annotations, as a worker would.
        """
        name = task if isinstance(task, str) or task is None else task.name
        if queue is not None:
            queues = [queue]
        elif name is not None and name in self.app.tasks:
            queues = [self.app.tasks[name].config.queue]
        else:
            queues = self.queues or self.app.queues
        views = self.app.client.views
        found: list[EnqueuedTask] = []
        for q in queues:
            for payload, due in await views.waiting_messages(q):
                waiting = self._decode(q, payload, due)
                if name is None or waiting.task == name:
                    found.append(waiting)
        return found

    async def assert_enqueued(
        self, task: Task[Any, Any], *args: Any, **kwargs: Any
    ) -> EnqueuedTask:
        """The waiting run of ``task`` with these arguments; otherwise AssertionError
        listing what does wait, with a diff against the closest call."""
        waiting = await self.enqueued(task)
        args, kwargs = _as_called(task, args, kwargs)
        for item in waiting:
            if _as_called(task, item.args, item.kwargs) == (args, kwargs):
                return item
        wanted = call_text(task.name, args, kwargs)
        listing = "\n".join(f"  - {w.describe()}" for w in waiting) or "  (nothing)"
        same_task = [call_text(w.task, w.args, w.kwargs) for w in waiting if w.task == task.name]
        raise AssertionError(
            f"expected {wanted} in queue {task.config.queue!r}; waiting there:\n{listing}\n"
            f"closest call (- expected, + waiting):\n{closest_diff(wanted, same_task)}"
        )

    async def assert_enqueued_calls(
        self, task: Task[Any, Any], calls: Sequence[tuple[Any, ...]]
    ) -> list[EnqueuedTask]:
        """Exactly these calls of ``task`` wait (positional arguments, in queue order);
        otherwise AssertionError with a line diff."""
        waiting = await self.enqueued(task)
        found = [call_text(w.task, w.args, w.kwargs) for w in waiting]
        expected = [call_text(task.name, call, {}) for call in calls]
        if found != expected:
            raise AssertionError(
                f"the calls of {task.name} waiting differ from those expected:\n"
                f"{list_diff(expected, found)}"
            )
        return waiting

    def assert_ran(self, task: Task[Any, Any], *args: Any, **kwargs: Any) -> FinishedTask:
        """The last run of ``task`` with these arguments that succeeded; otherwise
        AssertionError listing its runs, with a diff against the closest one."""
        name = task.name
        args, kwargs = _as_called(task, args, kwargs)
        runs = [f for f in self._finished if f.task == name]
        for run in reversed(runs):
            if run.args == args and run.kwargs == kwargs and run.status is TaskStatus.SUCCEEDED:
                return run
        wanted = call_text(name, args, kwargs, " -> succeeded")
        texts = [call_text(name, r.args, r.kwargs, f" -> {_outcome(r)}") for r in runs]
        listing = "\n".join(f"  - {t}" for t in texts) or "  (no run of it)"
        raise AssertionError(
            f"expected a successful run of {wanted.removesuffix(' -> succeeded')}; "
            f"runs of {name}:\n{listing}\n"
            f"closest run (- expected, + ran):\n{closest_diff(wanted, texts)}"
        )

    def assert_values(self, task: Task[Any, Any], values: Sequence[Any]) -> None:
        """The values of ``task``'s successful runs are these, in the order they finished;
        otherwise AssertionError with a line diff."""
        found = [
            pprint.pformat(f.value, width=88)
            for f in self._finished
            if f.task == task.name and f.status is TaskStatus.SUCCEEDED
        ]
        expected = [pprint.pformat(v, width=88) for v in values]
        if found != expected:
            raise AssertionError(
                f"the values of {task.name}'s successful runs differ:\n{list_diff(expected, found)}"
            )

    def _decode(self, queue: str, payload: bytes, due: float | None) -> EnqueuedTask:
        env = self.app.client.codec.unpack(payload)
        args: Any = _args_decoder.decode(env.args)
        kwargs: Any = _kwargs_decoder.decode(env.kwargs)
        registered = self.app.tasks.get(env.task)
        if registered is not None:
            wire_positional = len(args)
            args, kwargs = registered.spec.bind(args, kwargs)
            # Typed binding gives named parameters back as keywords: show them
            # the way the caller passed them.
            names = list(registered.spec.call_signature.parameters)
            for name in names[len(args) : wire_positional]:
                if name in kwargs:
                    args.append(kwargs.pop(name))
        return EnqueuedTask(
            id=env.id,
            task=env.task,
            queue=queue,
            args=tuple(args),
            kwargs=dict(kwargs),
            due_at=datetime.fromtimestamp(due, UTC) if due is not None else None,
            retries=env.retries,
        )


def _as_called(
    task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call in one canonical form: every argument that can be positional is, the
    rest by keyword, so ``add(1, y=2)`` and ``add(1, 2)`` compare equal."""
    signature = task.spec.call_signature
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return tuple(args), dict(kwargs)
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            positional.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            keywords.update(value)
        elif kind is inspect.Parameter.KEYWORD_ONLY or keywords:
            keywords[name] = value
        else:
            positional.append(value)
    return tuple(positional), keywords


def _outcome(run: FinishedTask) -> str:
    if run.status is TaskStatus.SUCCEEDED:
        return f"succeeded {run.value!r}"
    return f"{run.status.value} ({run.error})" if run.error else run.status.value


def _stuck_message(
    what: str, timeout: float, running: list[dict[str, Any]], ran: list[FinishedTask]
) -> str:
    lines = [f"{what} gave up after {timeout:g}s: work did not finish."]
    if running:
        lines.append("Still running:")
        lines += [
            f"  - {r.get('name')}[{r.get('id')}] in queue {r.get('queue')!r}, "
            f"attempt {r.get('attempt')}"
            for r in running
        ]
    else:
        lines.append("Nothing was running: the queues kept refilling (a task that enqueues")
        lines.append("itself?) or Redis stopped answering.")
    lines.append(f"Finished meanwhile: {len(ran)} run(s).")
    lines.append(f"Raise the bound with {what.removesuffix('()')}(timeout=...) if it is only slow.")
    return "\n".join(lines)
