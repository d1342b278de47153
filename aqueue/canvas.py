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

# Over 400 lines: signatures, chains and the plan that builds a chain's messages
# belong together (groups and chords live in aqueue.groups).

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import msgspec

from .core.errors import EnqueueError
from .core.hooks import hooked
from .core.protocol import ChainLink, ChordMember, OutgoingMessage
from .inline import refuse_in_eager_mode, run_eagerly
from .result import AsyncResult

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "Chain",
    "ChainPlan",
    "FanOut",
    "Produces",
    "Signature",
    "StepTask",
    "ValueTask",
    "as_steps",
    "chain",
    "plan_chain",
]

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


Step = Any  # a Signature, a group or a ValueTask, checked when the workflow is built


class Produces(Protocol[R_co]):
    """A chain step that hands the next step an ``R_co``: a signature (its value)
    or a group (the list of its members' values). For type checkers only."""

    def _chain_value(self) -> R_co: ...


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

    if TYPE_CHECKING:

        def _chain_value(self) -> R_co:
            """What the chain hands the next step (for type checkers only)."""
            raise NotImplementedError

    @overload
    def __or__(self, other: FanOut[R2]) -> Chain[list[R2]]: ...
    @overload
    def __or__(self, other: ValueTask[R_co, R2] | Signature[R2]) -> Chain[R2]: ...
    def __or__(self, other: Any) -> Chain[Any]:
        return Chain([*as_steps(self), *as_steps(other)])

    async def enqueue(self) -> AsyncResult[R_co]:
        """Send the call; returns a handle to await."""
        task = self.task
        queue, message = task.build_message(self.args, self.kwargs, self.opts)
        message = await hooked(task.client, queue, message)  # the App's enqueue middleware
        if task.client.eager:
            eager: AsyncResult[R_co] = await run_eagerly(task, queue, message)
            return eager
        task_id = await task.client.broker.enqueue(queue, message)
        return AsyncResult(task.client, task_id, queue, task.result_decoder)


class Chain(Signature[R_co]):
    """Steps run one after another; ``await chain.enqueue()`` is the last step's result."""

    __slots__ = ("steps",)

    def __init__(self, steps: list[Signature[Any] | FanOut[Any]]) -> None:
        calls = [step for step in steps if isinstance(step, Signature)]
        if not calls:
            raise EnqueueError("a chain needs at least one step that is not a group")
        # (A chain may end with a group while it is built with |; enqueue refuses it.)
        last = calls[-1]
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
        A group inside the chain becomes a chord whose callback is the step
        after it; that step's ``.parent`` is the step before the group.
        """
        plan = plan_chain(self.steps)
        client = plan.handles[0][2].client
        refuse_in_eager_mode("a chain", client.eager)
        await plan.send(client)
        return plan.last_result(client)


class FanOut(Generic[R_co]):
    """Calls that run side by side (the base of :class:`~aqueue.groups.Group`).

    Inside a chain, the step after it receives the list of their values (a
    chord); each member receives the value of the step before it.
    """

    __slots__ = ("signatures",)

    def __init__(self, signatures: list[Signature[R_co]]) -> None:
        self.signatures = signatures

    if TYPE_CHECKING:

        def _chain_value(self) -> list[R_co]:
            """What the chain hands the next step (for type checkers only)."""
            raise NotImplementedError

    def __or__(self, other: ValueTask[list[R_co], R2] | Signature[R2]) -> Chain[R2]:
        """``group(...) | callback``: a chord, as a chain."""
        return Chain([self, *as_steps(other)])


class ChainPlan:
    """A chain's messages, built and checked, before anything is sent."""

    __slots__ = ("chords", "first_link", "handles", "sends")

    def __init__(self) -> None:
        #: The link to the chain's first step (what the step before it carries).
        self.first_link: ChainLink | None = None
        #: Chords to record before anything is sent: (queue, chord id, size, callback).
        self.chords: list[tuple[str, str, int, OutgoingMessage]] = []
        #: Messages sent now: the first step's, or a leading group's members'.
        self.sends: list[tuple[str, OutgoingMessage]] = []
        #: (task id, queue, task) of each step that is not a group, in order.
        self.handles: list[tuple[str, str, StepTask]] = []

    def last_result(self, client: Client) -> AsyncResult[Any]:
        """The last step's handle, ``.parent`` leading back through the others."""
        parent: AsyncResult[Any] | None = None
        for task_id, queue, task in self.handles:
            result: AsyncResult[Any] = AsyncResult(client, task_id, queue, task.result_decoder)
            result.parent = parent
            parent = result
        assert parent is not None
        return parent

    async def send(self, client: Client) -> None:
        broker = client.broker
        self.sends = [(q, await hooked(client, q, m)) for q, m in self.sends]  # middleware
        for queue, chord_id, size, callback in self.chords:
            # Recorded before any member can end, so none ends uncounted.
            callback = await hooked(client, queue, callback)  # sent now, run later
            await broker.create_chord(queue, chord_id, size, False, callback)
        if len(self.sends) == 1:
            await broker.enqueue(*self.sends[0])
            return
        by_queue: dict[str, list[OutgoingMessage]] = {}
        for queue, message in self.sends:
            by_queue.setdefault(queue, []).append(message)
        for queue, messages in by_queue.items():
            await broker.enqueue_many(queue, messages)


def plan_chain(
    steps: list[Signature[Any] | FanOut[Any]],
    member: ChordMember | None = None,
    takes_parent: bool = False,
) -> ChainPlan:
    """Build a chain's messages from the last step to the first, each carrying the next.

    ``member``: the chain is a member of a chord, which counts its last step.
    ``takes_parent``: its first step receives the value of a step before it.
    """
    plan = ChainPlan()
    link: ChainLink | None = None
    built: list[tuple[str, OutgoingMessage] | None] = [None] * len(steps)
    last = len(steps) - 1
    for i in range(last, -1, -1):
        step = steps[i]
        later = i > 0 or takes_parent  # sent by a worker once the step before it ended
        if isinstance(step, FanOut):
            link = _plan_group(plan, steps, built, i, later)
            continue
        if later and step.opts.task_id is not None:
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
            task_id=step.opts.task_id or os.urandom(16).hex(),
            then=link,
            takes_parent=later and not step.immutable,
            member=member if i == last else None,
        )
        built[i] = (queue, message)
        plan.handles.append((message.task_id, queue, step.task))
        # A later step's delay counts from when the step before it finished.
        opts = step.opts
        eta = None if opts.eta is None else opts.eta.timestamp()
        link = ChainLink(queue, message.payload, step.immutable, opts.delay or 0.0, eta)
        if i == 0 and not later:
            plan.sends.append((queue, message))
    plan.handles.reverse()
    plan.first_link = link
    return plan


def _plan_group(
    plan: ChainPlan,
    steps: list[Signature[Any] | FanOut[Any]],
    built: list[tuple[str, OutgoingMessage] | None],
    i: int,
    later: bool,
) -> ChainLink:
    """A group at ``steps[i]``: a chord whose callback is the step after it."""
    group = steps[i]
    assert isinstance(group, FanOut)
    if i + 1 == len(steps):
        raise EnqueueError(
            f"step {i + 1} of the chain is a group with no step after it: a group inside "
            "a chain needs a step that receives the list of its values (a chord), "
            "e.g. chain(a.s(), group(...), collect.s())"
        )
    after = steps[i + 1]
    if isinstance(after, FanOut):
        raise EnqueueError(
            f"steps {i + 1} and {i + 2} of the chain are groups: put a step that "
            "receives the first group's values between them"
        )
    if isinstance(after, Signature) and after.immutable:
        raise EnqueueError(
            f"step {i + 2} of the chain follows a group: it receives the list of the "
            "group's values, so it can't be immutable (.si)"
        )
    if not group.signatures:
        raise EnqueueError(f"step {i + 1} of the chain is an empty group")
    callback = built[i + 1]
    assert callback is not None
    callback_queue, callback_message = callback
    chord_id = os.urandom(16).hex()
    plan.chords.append((callback_queue, chord_id, len(group.signatures), callback_message))
    links: list[ChainLink] = []
    for index, signature in enumerate(group.signatures):
        member = ChordMember(callback_queue, chord_id, index)
        sub = plan_chain(as_steps(signature), member, later)
        plan.chords.extend(sub.chords)
        if later:
            sub_link = sub.first_link
            assert sub_link is not None
            links.append(sub_link)
        else:
            plan.sends.extend(sub.sends)
    return ChainLink(callback_queue, b"", False, members=links)


def as_steps(step: Step) -> list[Signature[Any] | FanOut[Any]]:
    if isinstance(step, Chain):
        return list(step.steps)
    if isinstance(step, Signature | FanOut):
        return [step]
    make = getattr(step, "s", None)
    if callable(make):
        # A task as a step: called with its parent's value alone.
        signature = make()
        if isinstance(signature, Signature):
            return [signature]
    raise EnqueueError(
        f"a workflow step must be task.s(...), task.si(...), a task or a group, got {step!r}"
    )


@overload
def chain(s1: Produces[R1], /) -> Chain[R1]: ...
@overload
def chain(s1: Produces[R1], s2: ValueTask[R1, R2] | Produces[R2], /) -> Chain[R2]: ...
@overload
def chain(
    s1: Produces[R1],
    s2: ValueTask[R1, R2] | Produces[R2],
    s3: ValueTask[R2, R3] | Produces[R3],
    /,
) -> Chain[R3]: ...
@overload
def chain(
    s1: Produces[R1],
    s2: ValueTask[R1, R2] | Produces[R2],
    s3: ValueTask[R2, R3] | Produces[R3],
    s4: ValueTask[R3, R4] | Produces[R4],
    /,
) -> Chain[R4]: ...
@overload
def chain(
    s1: Produces[R1],
    s2: ValueTask[R1, R2] | Produces[R2],
    s3: ValueTask[R2, R3] | Produces[R3],
    s4: ValueTask[R3, R4] | Produces[R4],
    s5: ValueTask[R4, R5] | Produces[R5],
    /,
) -> Chain[R5]: ...
@overload
def chain(
    s1: Produces[Any], s2: Any, s3: Any, s4: Any, s5: Any, s6: Any, /, *more: Any
) -> Chain[Any]: ...
def chain(*steps: Any) -> Chain[Any]:
    """Steps run one after another, each value the next step's first argument.

    A step is ``task.s(...)`` (its arguments after the parent's value),
    ``task.si(...)`` (ignores the parent's value), a task itself (takes the
    parent's value alone) or a group (each member takes the parent's value; the
    step after the group takes the list of their values: a chord). Past five
    steps the type checker sees ``Chain[Any]``.
    """
    return Chain([signature for step in steps for signature in as_steps(step)])
