"""Workflows side by side: groups and chords.

``group(add.s(i, i) for i in range(n))`` sends calls at once (one round trip
per 1,000 messages of a queue) and gives a :class:`GroupResult`;
``chord(group(...), total)`` runs one callback, exactly once, with every
member's value in group order. Each member's message names the chord
(``Envelope.member``); its worker hands the outcome on with the finish script,
and the chord counts it once under the callback queue's hash tag (see
``aqueue.runtime.workflow``), so members on any queues work on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from typing import Any, Generic, Literal, TypeVar, overload

from .canvas import (
    Chain,
    ChainPlan,
    FanOut,
    Signature,
    StepTask,
    ValueTask,
    as_steps,
    plan_chain,
)
from .core.errors import EnqueueError, TaskFailed
from .core.hooks import hooked
from .core.protocol import ChordMember, OutgoingMessage
from .core.status import TaskStatus
from .inline import refuse_in_eager_mode, run_eagerly
from .result import AsyncResult

__all__ = ["Chord", "Group", "GroupResult", "chord", "group"]

R = TypeVar("R")
R1 = TypeVar("R1")
R2 = TypeVar("R2")
R_co = TypeVar("R_co", covariant=True)


class Group(FanOut[R_co]):
    """Calls run side by side: ``await group(...).enqueue()`` is a :class:`GroupResult`.

    A member may be a chain (its last step's value is the member's value).
    Inside a chain, a group is followed by the step that receives the list of
    its values: ``chain(a.s(), group(b.s(), c.s()), d.s())`` (a chord).
    """

    __slots__ = ()

    def __init__(self, signatures: list[Signature[R_co]]) -> None:
        for signature in signatures:
            if not isinstance(signature, Signature):
                raise EnqueueError(
                    "a group's members must be task.s(...), task.si(...) or chains, "
                    f"got {signature!r}"
                )
        super().__init__(signatures)

    def __len__(self) -> int:
        return len(self.signatures)

    def __repr__(self) -> str:
        return f"<Group of {len(self.signatures)}>"

    async def enqueue(self) -> GroupResult[R_co]:
        """Send every member: one round trip per 1,000 messages of each queue.

        Every member is checked and encoded before anything is sent, so a bad
        argument raises here and nothing is enqueued.
        """
        return await self._send(None)

    async def _send(self, chord: tuple[str, str] | None) -> GroupResult[R_co]:
        """Send every member; ``chord`` is (callback queue, chord id) when one counts them."""
        by_queue: dict[str, list[OutgoingMessage]] = {}
        # Per member: where its message sits in its queue's batch, or its chain's plan.
        order: list[tuple[str, int, StepTask] | ChainPlan] = []
        for index, signature in enumerate(self.signatures):
            task = signature.task
            member = None if chord is None else ChordMember(chord[0], chord[1], index)
            if isinstance(signature, Chain):
                plan = plan_chain(signature.steps, member)
                for queue, message in plan.sends:
                    by_queue.setdefault(queue, []).append(message)
                order.append(plan)
                continue
            queue, message = task.build_message(
                signature.args, signature.kwargs, signature.opts, member=member
            )
            batch = by_queue.setdefault(queue, [])
            order.append((queue, len(batch), task))
            batch.append(message)
        if not order:
            return GroupResult([])
        client = self.signatures[0].task.client
        if client.hooks.has("enqueue"):  # each member inside the App's enqueue middleware
            for queue, batch in by_queue.items():
                batch[:] = [await hooked(client, queue, message) for message in batch]
        if client.eager:
            # Members are independent: each runs inline, in order (never a chord's).
            singles = [placed for placed in order if not isinstance(placed, ChainPlan)]
            if len(singles) < len(order):
                refuse_in_eager_mode("a chain inside a group", True)
            return GroupResult(
                [await run_eagerly(task, queue, by_queue[queue][i]) for queue, i, task in singles]
            )
        broker = client.broker
        for placed in order:
            if isinstance(placed, ChainPlan):
                for queue, chord_id, size, callback in placed.chords:
                    callback = await hooked(client, queue, callback)
                    await broker.create_chord(queue, chord_id, size, False, callback)
        ids = {queue: await broker.enqueue_many(queue, msgs) for queue, msgs in by_queue.items()}
        results: list[AsyncResult[Any]] = []
        for placed in order:
            if isinstance(placed, ChainPlan):
                results.append(placed.last_result(client))
            else:
                queue, i, task = placed
                results.append(AsyncResult(client, ids[queue][i], queue, task.result_decoder))
        return GroupResult(results)


@overload
def group(signatures: Iterable[Signature[R]], /) -> Group[R]: ...
@overload
def group(*signatures: Signature[R] | ValueTask[Any, R]) -> Group[R]: ...
def group(*signatures: Any) -> Group[Any]:
    """Calls run side by side: ``group(add.s(i, i) for i in range(100))`` or
    ``group(add.s(1, 1), add.s(2, 2))``. Inside a chain a member may be a task
    itself (``group(double, square)``): it takes the value before the group alone."""
    if len(signatures) == 1 and not isinstance(signatures[0], Signature | FanOut):
        first = signatures[0]
        if not callable(getattr(first, "s", None)):
            signatures = tuple(first)
    return Group([_member(signature) for signature in signatures])


def _member(step: Any) -> Signature[Any]:
    """A group member: a signature or chain as is, a task as ``task.s()``."""
    if isinstance(step, Signature):
        return step
    made = as_steps(step) if callable(getattr(step, "s", None)) else [step]
    if len(made) != 1 or not isinstance(made[0], Signature):
        raise EnqueueError(
            f"a group's members must be task.s(...), task.si(...), tasks or chains, got {step!r}"
        )
    return made[0]


class GroupResult(Generic[R_co]):
    """The members of a sent group, in order. ``await`` it for their values.

    ``await gr`` raises the first failure (in group order);
    ``await gr.get(return_exceptions=True)`` puts each failure, a
    :class:`~aqueue.TaskFailed`, in its member's place instead.
    """

    __slots__ = ("results",)

    def __init__(self, results: list[AsyncResult[R_co]]) -> None:
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult[R_co]]:
        return iter(self.results)

    def __repr__(self) -> str:
        return f"<GroupResult of {len(self.results)}>"

    def __await__(self) -> Generator[Any, None, list[R_co]]:
        return self.get().__await__()

    @overload
    async def get(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        return_exceptions: Literal[False] = False,
    ) -> list[R_co]: ...
    @overload
    async def get(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        return_exceptions: Literal[True],
    ) -> list[R_co | TaskFailed]: ...
    async def get(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        return_exceptions: bool = False,
    ) -> list[R_co] | list[R_co | TaskFailed]:
        """Every member's value in group order, waiting up to ``timeout`` in all."""
        async with asyncio.timeout(timeout):
            if not return_exceptions:
                return list(await asyncio.gather(*(r.get() for r in self.results)))
            values: list[Any] = await asyncio.gather(
                *(r.get() for r in self.results), return_exceptions=True
            )
        for value in values:
            if isinstance(value, BaseException) and not isinstance(value, TaskFailed):
                raise value
        return values

    async def completed(self) -> int:
        """How many members have succeeded so far."""
        return sum(1 for status in await self._statuses() if status is TaskStatus.SUCCEEDED)

    async def failed(self) -> int:
        """How many members have ended without a value (failed, aborted, expired, dead)."""
        return sum(
            1
            for status in await self._statuses()
            if status.is_final and status is not TaskStatus.SUCCEEDED
        )

    async def ready(self) -> bool:
        """True when every member has reached a final state."""
        return all(status.is_final for status in await self._statuses())

    async def abort(self) -> int:
        """Abort every member not finished yet; returns how many were stopped."""
        stopped = await asyncio.gather(*(r.abort() for r in self.results))
        return sum(1 for was_stopped in stopped if was_stopped)

    async def _statuses(self) -> list[TaskStatus]:
        return list(await asyncio.gather(*(r.status() for r in self.results)))

    async def as_completed(self) -> AsyncIterator[AsyncResult[R_co]]:
        """Each member's handle as it reaches a final state (awaiting it then won't wait)."""

        async def settle(result: AsyncResult[R_co]) -> AsyncResult[R_co]:
            with contextlib.suppress(TaskFailed):
                await result
            return result

        for finished in asyncio.as_completed([settle(r) for r in self.results]):
            yield await finished


class Chord(Generic[R_co]):
    """A group, then one callback with every member's value in group order.

    The callback runs exactly once, after every member reached a final state.
    When a member failed, the callback does not run and fails listing every
    failure — unless ``allow_failures=True``: then it runs with each failed
    member as a :class:`~aqueue.TaskFailed` in its place (annotate that
    parameter ``list[Any]``: msgspec can't type a union with an exception).
    """

    __slots__ = ("allow_failures", "callback", "group", "id", "members")

    def __init__(
        self, members: Group[Any], callback: Signature[R_co], allow_failures: bool
    ) -> None:
        if isinstance(callback, Chain) or not isinstance(callback, Signature):
            raise EnqueueError(
                f"a chord's callback must be task.s(...) or a task, got {callback!r}"
            )
        self.group = members
        self.callback = callback
        self.allow_failures = allow_failures
        #: The members' results, once :meth:`enqueue` has sent them.
        self.members: GroupResult[Any] | None = None
        #: The chord's id, once sent (None for a chord of no members).
        self.id: str | None = None

    def __repr__(self) -> str:
        return f"<Chord of {len(self.group)} then {self.callback!r}>"

    async def enqueue(self) -> AsyncResult[R_co]:
        """Send the members; returns the callback's result (members: ``.members``)."""
        callback = self.callback
        task = callback.task
        client = task.client
        refuse_in_eager_mode("a chord", client.eager)
        if not self.group.signatures:
            # Nothing to wait for: the callback runs now with no values.
            queue, message = task.build_message(
                ([], *callback.args), callback.kwargs, callback.opts
            )
            message = await hooked(client, queue, message)
            await client.broker.enqueue(queue, message)
            self.members = GroupResult([])
            return AsyncResult(client, message.task_id, queue, task.result_decoder)
        queue, message = task.build_message(
            callback.args,
            callback.kwargs,
            callback.opts,
            task_id=callback.opts.task_id or os.urandom(16).hex(),
            takes_parent=True,
        )
        chord_id = self.id = os.urandom(16).hex()
        message = await hooked(client, queue, message)  # sent now, run once they end
        # Recorded before any member is sent, so no member can end uncounted.
        await client.broker.create_chord(
            queue, chord_id, len(self.group), self.allow_failures, message
        )
        self.members = await self.group._send((queue, chord_id))
        return AsyncResult(client, message.task_id, queue, task.result_decoder)


@overload
def chord(
    members: Group[R1], callback: ValueTask[list[R1], R2], /, *, allow_failures: bool = False
) -> Chord[R2]: ...
@overload
def chord(
    members: Group[Any], callback: Signature[R2], /, *, allow_failures: bool = False
) -> Chord[R2]: ...
def chord(members: Any, callback: Any, /, *, allow_failures: bool = False) -> Chord[Any]:
    """A group, then one callback with every member's value: ``chord(group(...), total)``.

    The callback is ``task.s(...)`` (its arguments after the list of values) or a
    task itself (the list alone). ``members`` may be a group or an iterable of
    signatures.
    """
    if not isinstance(members, Group):
        members = Group(list(members))
    if not isinstance(callback, Signature):
        step = as_steps(callback)[0]
        if not isinstance(step, Signature):
            raise EnqueueError(f"a chord's callback must be task.s(...) or a task, got {step!r}")
        callback = step
    return Chord(members, callback, allow_failures)
