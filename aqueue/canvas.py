"""Workflows: signatures, chains and groups, typed.

``add.s(1, 2)`` is a :class:`Signature` (a call that has not been sent);
``chain(a.s(x), b, c)`` — or ``a.s(x) | b | c`` — runs the steps one after
another, each step's value becoming the next step's first argument. Groups
and chords are in :mod:`aqueue.groups`.

A chain is sent as its first step's message carrying the rest (each step's
message carries the one after it); the worker that finishes a step hands the
next one on in the same script call that records the outcome (see
``aqueue.runtime.workflow``), so a crash can't lose or double a step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import msgspec

from .core.errors import EnqueueError
from .core.protocol import ChainLink, ChordMember, OutgoingMessage
from .result import AsyncResult

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Chain", "Signature", "StepTask", "ValueTask", "as_steps", "chain"]

R = TypeVar("R")
R1 = TypeVar("R1")
R2 = TypeVar("R2")
R3 = TypeVar("R3")
R4 = TypeVar("R4")
R5 = TypeVar("R5")
R_co = TypeVar("R_co", covariant=True)
A_contra = TypeVar("A_contra", contravariant=True)


class StepTask(Protocol):
    """What a signature needs of its task (a :class:`~aqueue.task.Task`)."""

    @property
    def name(self) -> str: ...
    @property
    def client(self) -> Client: ...
    def merge_options(self, opts: Any, options: Mapping[str, Any]) -> Any: ...
    def result_decoder(self) -> msgspec.msgpack.Decoder[Any]: ...
    def build_message(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        opts: Any,
        *,
        task_id: str | None = None,
        then: ChainLink | None = None,
        takes_parent: bool = False,
        member: ChordMember | None = None,
    ) -> tuple[str, OutgoingMessage]: ...


class ValueTask(Protocol[A_contra, R_co]):
    """A task whose one argument is a value of type ``A_contra`` (a chain step).

    ``Task[[float], str]`` is a ``ValueTask[float, str]``, so after a step that
    returns ``int`` a type checker accepts it and rejects a ``Task[[str], ...]``.
    """

    def s(self, value: A_contra, /) -> Signature[R_co]: ...


Step = Any  # a Signature or a ValueTask, checked when the workflow is built


class Signature(Generic[R_co]):
    """One call of a task, not sent yet: ``task.s(...)`` / ``task.si(...)``."""

    __slots__ = ("args", "immutable", "kwargs", "opts", "task")

    def __init__(
        self,
        task: StepTask,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        opts: Any,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = dict(kwargs)
        self.opts = opts
        self.immutable = immutable

    def __repr__(self) -> str:
        mark = "si" if self.immutable else "s"
        return f"<Signature {self.task.name}.{mark}{self.args!r}>"

    def options(self, **options: Any) -> Signature[R_co]:
        """The same call with per-call options (``queue``, ``timeout``, ``task_id``, ...)."""
        opts = self.task.merge_options(self.opts, options)
        return Signature(self.task, self.args, self.kwargs, opts, self.immutable)

    def __or__(self, other: ValueTask[R_co, R2] | Signature[R2]) -> Chain[R2]:
        return Chain([*as_steps(self), *as_steps(other)])

    async def enqueue(self) -> AsyncResult[R_co]:
        """Send the call; returns a handle to await."""
        task = self.task
        queue, message = task.build_message(self.args, self.kwargs, self.opts)
        task_id = await task.client.broker.enqueue(queue, message)
        return AsyncResult(task.client, task_id, queue, task.result_decoder)


class Chain(Signature[R_co]):
    """Steps run one after another; ``await chain.enqueue()`` is the last step's result."""

    __slots__ = ("steps",)

    def __init__(self, steps: list[Signature[Any]]) -> None:
        if not steps:
            raise EnqueueError("a chain needs at least one step")
        last = steps[-1]
        super().__init__(last.task, last.args, last.kwargs, last.opts, last.immutable)
        self.steps = steps

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.steps)

    def options(self, **options: Any) -> Chain[R_co]:
        raise EnqueueError("set options on the chain's steps: chain(a.s(1).options(...), ...)")

    async def enqueue(self) -> AsyncResult[R_co]:
        """Send the first step, carrying the others; the last step's result, ``.parent`` back.

        Every step's arguments are checked here (a step after the first with a
        stand-in for its parent's value), so a chain that can't run raises now.
        """
        steps = self.steps
        ids = [os.urandom(16).hex() for _ in steps]
        link: ChainLink | None = None
        queues = [""] * len(steps)
        for i in range(len(steps) - 1, -1, -1):
            step = steps[i]
            if i > 0 and step.opts.task_id is not None:
                # A later step is enqueued only if its id has no record yet: an old
                # record under a chosen id would silently stand in for the step.
                raise EnqueueError(
                    f"step {i + 1} of the chain ({step.task.name}) has a fixed task_id: "
                    "only a chain's first step can choose its id"
                )
            queue, message = step.task.build_message(
                step.args,
                step.kwargs,
                step.opts,
                task_id=step.opts.task_id or ids[i],
                then=link,
                takes_parent=i > 0 and not step.immutable,
            )
            ids[i], queues[i] = message.task_id, queue
            # A later step's delay counts from when the step before it finished.
            opts = step.opts
            eta = None if opts.eta is None else opts.eta.timestamp()
            link = ChainLink(queue, message.payload, step.immutable, opts.delay or 0.0, eta)
        first = steps[0]
        client = first.task.client
        await client.broker.enqueue(queues[0], message)
        parent: AsyncResult[Any] | None = None
        result: AsyncResult[Any] | None = None
        for step, task_id, queue in zip(steps, ids, queues, strict=True):
            result = AsyncResult(client, task_id, queue, step.task.result_decoder)
            result.parent = parent
            parent = result
        assert result is not None
        return result


def as_steps(step: Step) -> list[Signature[Any]]:
    if isinstance(step, Chain):
        return list(step.steps)
    if isinstance(step, Signature):
        return [step]
    make = getattr(step, "s", None)
    if callable(make):
        # A task as a step: called with its parent's value alone.
        signature = make()
        if isinstance(signature, Signature):
            return [signature]
    raise EnqueueError(f"a workflow step must be task.s(...), task.si(...) or a task, got {step!r}")


@overload
def chain(s1: Signature[R1], /) -> Chain[R1]: ...
@overload
def chain(s1: Signature[R1], s2: ValueTask[R1, R2] | Signature[R2], /) -> Chain[R2]: ...
@overload
def chain(
    s1: Signature[R1],
    s2: ValueTask[R1, R2] | Signature[R2],
    s3: ValueTask[R2, R3] | Signature[R3],
    /,
) -> Chain[R3]: ...
@overload
def chain(
    s1: Signature[R1],
    s2: ValueTask[R1, R2] | Signature[R2],
    s3: ValueTask[R2, R3] | Signature[R3],
    s4: ValueTask[R3, R4] | Signature[R4],
    /,
) -> Chain[R4]: ...
@overload
def chain(
    s1: Signature[R1],
    s2: ValueTask[R1, R2] | Signature[R2],
    s3: ValueTask[R2, R3] | Signature[R3],
    s4: ValueTask[R3, R4] | Signature[R4],
    s5: ValueTask[R4, R5] | Signature[R5],
    /,
) -> Chain[R5]: ...
@overload
def chain(
    s1: Signature[Any], s2: Any, s3: Any, s4: Any, s5: Any, s6: Any, /, *more: Any
) -> Chain[Any]: ...
def chain(*steps: Any) -> Chain[Any]:
    """Steps run one after another, each value the next step's first argument.

    A step is ``task.s(...)`` (its arguments after the parent's value),
    ``task.si(...)`` (ignores the parent's value) or a task itself (takes the
    parent's value alone). Past five steps the type checker sees ``Chain[Any]``.
    """
    return Chain([signature for step in steps for signature in as_steps(step)])
