"""Workflows on the worker: what a finished chain step hands on, and forwarding it.

A chain step's message carries the next step (``Envelope.then``). When the
step reaches a final state, :func:`follow_ups` describes what comes next — the
next step's message with the step's value as its first argument, or, when the
step ended without a value, a failure for every step after it — and the
finish script writes that to the queue's *outbox* in the same call that
records the outcome. Nothing is lost or doubled between "step done" and
"next step enqueued": both happen in one script or neither does.

The :class:`Forwarder` then moves hand-offs from the outbox to the queues they
belong to (``forward.lua``, one slot each, so workflows may span queues on
Redis Cluster) and drops them. A forwarder that stops in between leaves the
hand-off in the outbox; any worker of that queue forwards it again later, and
``forward.lua`` leaves alone a step forwarded before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from .._redis.broker import Broker
from .._redis.connection import RETRYABLE
from ..core.handoffs import (
    FAILED_MEMBER_EXT,
    HANDOFF_CHORD,
    HANDOFF_DELAYED,
    HANDOFF_ENQUEUE,
    HANDOFF_FAIL,
    Handoff,
    decode_delayed,
    decode_handoffs,
    encode_delayed,
    encode_handoffs,
    encode_member_failure,
)
from ..core.protocol import (
    ChainLink,
    Codec,
    Envelope,
    ErrorInfo,
    FinishItem,
    MessageError,
    OutgoingMessage,
    decode_envelope,
    decode_error,
    encode_error,
    verify,
)
from ..core.status import TaskStatus

__all__ = ["Forwarder", "follow_ups", "refused_follow_ups"]

logger = logging.getLogger("aqueue.worker")

_raw_args = msgspec.msgpack.Decoder(list[msgspec.Raw])
_encode = msgspec.msgpack.Encoder().encode

#: How often each queue's outbox is looked at for hand-offs left by a crash.
RECOVERY_INTERVAL = 2.0
#: Outbox entries forwarded per round (each holds one finish call's hand-offs, up to 500).
_BATCH = 10


def follow_ups(envelope: Envelope, item: FinishItem, codec: Codec, now: float) -> bytes:
    """The hand-off rows for the outbox once a workflow step has this outcome (b"": none)."""
    if not item.state.is_final:
        return b""
    rows: list[Handoff] = []
    member = envelope.member
    if member is not None:
        if item.state is TaskStatus.SUCCEEDED:
            outcome = b"s" + item.result
        else:
            outcome = b"f" + encode_member_failure(item.task_id, item.state.value, item.error)
        rows.append((member.queue, member.chord, str(member.index), outcome, HANDOFF_CHORD))
    link = envelope.then
    if link is None:
        return encode_handoffs(rows) if rows else b""
    if item.state is TaskStatus.SUCCEEDED:
        _next_steps(link, item.result, codec, now, rows)
        return encode_handoffs(rows)
    failure = decode_error(item.error)
    error = encode_error(
        ErrorInfo(
            failure.type,
            f"an earlier step of the chain (task {item.task_id}) ended {item.state.value}: "
            f"{failure.message}",
            failure.traceback,
        )
    )
    _fail_from(link, error, rows)
    return encode_handoffs(rows)


def _fail_from(link: ChainLink | None, error: bytes, rows: list[Handoff]) -> None:
    """Rows that fail the step of ``link`` and every step after it, never having run.

    A group's members fail, each counted by its chord, whose callback (the step
    after the group) then fails with every member listed, and the steps after
    it with it (see :meth:`Forwarder.fire`).
    """
    while link is not None:
        if link.members is not None:
            for member_link in link.members:
                _fail_from(member_link, error, rows)
            return
        # Read unverified: only failures come of it, never a message to run.
        step = decode_envelope(verify(link.payload, None))
        rows.append((link.queue, step.id, step.task, error, HANDOFF_FAIL))
        if step.member is not None:  # its chord counts it
            failed = encode_member_failure(step.id, TaskStatus.FAILED.value, error)
            rows.append(
                (
                    step.member.queue,
                    step.member.chord,
                    str(step.member.index),
                    b"f" + failed,
                    HANDOFF_CHORD,
                )
            )
        link = step.then


def refused_follow_ups(payload: bytes, item: FinishItem, codec: Codec) -> bytes:
    """The hand-off rows of a message that ended without running (b"": none).

    Refused (unknown task, bad arguments, expired), aborted or purged while it
    waited: a workflow step among them must still end its chain or count in
    its chord. A message whose signature does not verify is read unverified:
    ending a workflow early is all that can come of it, since a step that never
    ran hands on failures only, never a message to run.
    """
    if not item.state.is_final or item.state is TaskStatus.SUCCEEDED:
        return b""
    try:
        envelope = codec.unpack(payload)
    except MessageError as exc:
        if exc.reason != "bad_signature":
            return b""  # garbage never belonged to a workflow
        try:
            envelope = decode_envelope(verify(payload, None))
        except MessageError:
            return b""
    if envelope.then is None and envelope.member is None:
        return b""
    if not item.task_id:
        item = msgspec.structs.replace(item, task_id=envelope.id)
    try:
        return follow_ups(envelope, item, codec, time.time())
    except MessageError:
        return b""  # a later step's message is not one: nothing can be handed on


def _next_steps(
    link: ChainLink, value: bytes, codec: Codec, now: float, rows: list[Handoff]
) -> None:
    """The next step with ``value``; for a group inside the chain, every member's
    first step (a member that is a chain beginning with a group: its members')."""
    if link.members is None:
        rows.append(_next_step(link, value, codec, now))
        return
    for member in link.members:
        _next_steps(member, value, codec, now, rows)


def _next_step(link: ChainLink, value: bytes, codec: Codec, now: float) -> Handoff:
    step = codec.unpack(link.payload)
    changes: dict[str, object] = {"enqueued_at": now}
    if not link.immutable:
        # The parent's value (already msgpack) becomes the first argument as is.
        args = [msgspec.Raw(value), *_raw_args.decode(step.args)]
        changes["args"] = msgspec.Raw(_encode(args))
    step = msgspec.structs.replace(step, **changes)
    if link.delay > 0 or link.eta is not None:
        # The delay counts from when the step is forwarded: at least that long
        # after the step before it finished.
        eta_ms = 0 if link.eta is None else int(link.eta * 1000)
        body = encode_delayed(int(link.delay * 1000), eta_ms, codec.pack(step))
        return (link.queue, step.id, step.task, body, HANDOFF_DELAYED)
    return (link.queue, step.id, step.task, codec.pack(step), HANDOFF_ENQUEUE)


class Forwarder:
    """Moves workflow hand-offs from this worker's queues' outboxes to their queues."""

    def __init__(self, broker: Callable[[], Broker], queues: Sequence[str], codec: Codec) -> None:
        self._broker = broker
        self.queues = list(queues)
        self.codec = codec
        self._due: set[str] = set()
        self._wanted = asyncio.Event()

    def handed_off(self, queue: str) -> None:
        """An outcome with hand-offs was recorded in ``queue``: forward them soon."""
        self._due.add(queue)
        self._wanted.set()

    async def loop(self) -> None:
        """Forward at once when told, and every few seconds whatever a crash left."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECOVERY_INTERVAL):
                    await self._wanted.wait()
            self._wanted.clear()
            due, self._due = self._due, set()
            for queue in due or self.queues:
                try:
                    await self.forward(queue)
                except RETRYABLE as exc:
                    # Left in the outbox: the next round forwards it.
                    logger.warning("forwarding workflow steps of %s failed: %s", queue, exc)

    async def forward(self, queue: str) -> int:
        """Forward every hand-off in ``queue``'s outbox; returns how many steps."""
        broker = self._broker()
        forwarded = 0
        while True:
            entries = await broker.handoffs(queue, _BATCH)
            if not entries:
                return forwarded
            # Per target queue: each hand-off and the id of the step that handed it on.
            by_queue: dict[str, list[tuple[Handoff, str]]] = {}
            for _entry_id, fields in entries:
                if b"dead" in fields:
                    sources = [
                        self._dead_letter_handoff(fields[b"dead"], fields.get(b"deliveries"))
                    ]
                elif b"ended" in fields:
                    sources = [self._ended_handoff(fields)]
                else:
                    sources = [(encoded, _handed_by(name)) for name, encoded in fields.items()]
                for encoded, parent in sources:
                    if encoded:
                        for row in decode_handoffs(encoded):
                            by_queue.setdefault(row[0], []).append((row, parent))
            for target, pairs in by_queue.items():
                delayed = [row for row, _ in pairs if row[4] == HANDOFF_DELAYED]
                if delayed:
                    await self._schedule(broker, target, delayed)
                    pairs = [pair for pair in pairs if pair[0][4] != HANDOFF_DELAYED]
                    forwarded += len(delayed)
                if not pairs:
                    continue
                handoffs = [row for row, _ in pairs]
                parents = [(parent, queue) for _, parent in pairs]
                _enqueued, complete = await broker.forward(target, handoffs, parents)
                forwarded += len(handoffs)
                for chord_id in complete:
                    await self.fire(target, chord_id)
            # Dropped only now: a forwarder that stops before this is repeated by
            # the next one, and forward.lua / chord.lua ignore what was done.
            await broker.drop_handoffs(queue, [entry_id for entry_id, _ in entries])

    @staticmethod
    async def _schedule(broker: Broker, queue: str, rows: list[Handoff]) -> None:
        """Chain steps with a delay or ETA go to the queue's delayed set. A step
        forwarded before has a record by then and is left alone (its id was drawn
        by aqueue, so the enqueue script takes any record as "already sent")."""
        now_ms = int(time.time() * 1000)
        messages = []
        for _queue, task_id, name, body, _kind in rows:
            delay_ms, eta_ms, payload = decode_delayed(body)
            delay_ms = max(delay_ms, eta_ms - now_ms, 0)
            messages.append(OutgoingMessage(task_id, name, payload, delay_ms=delay_ms))
        await broker.enqueue_many(queue, messages)

    def _dead_letter_handoff(self, payload: bytes, deliveries: bytes | None) -> tuple[bytes, str]:
        """The hand-off of a step the reclaimer dead-lettered (b"": not a workflow step)
        and the step's id."""
        try:
            envelope = self.codec.unpack(payload)
        except MessageError:
            return b"", ""  # garbage never belonged to a workflow
        if envelope.then is None and envelope.member is None:
            return b"", envelope.id
        times = deliveries.decode() if deliveries else "too many"
        error = ErrorInfo(
            "DeadLetter",
            f"moved to the dead-letter stream: delivered {times} times without finishing "
            "(worker crashed or hung each time)",
        )
        item = FinishItem("", envelope.id, TaskStatus.DEAD, error=encode_error(error))
        return follow_ups(envelope, item, self.codec, time.time()), envelope.id

    def _ended_handoff(self, fields: dict[bytes, bytes]) -> tuple[bytes, str]:
        """The hand-off of a step that ended without running (aborted or purged while
        it waited), and the step's id: the scripts that ended it left its message and
        error here."""
        state = TaskStatus(fields[b"ended"].decode())
        error = fields.get(b"error") or encode_error(ErrorInfo("TaskAborted", "aborted"))
        item = FinishItem("", "", state, error=error)
        payload = fields.get(b"m", b"")
        rows = refused_follow_ups(payload, item, self.codec)
        if not rows:
            return b"", ""
        # Read unverified, as a label only: refused_follow_ups judged the message.
        return rows, decode_envelope(verify(payload, None)).id

    async def _fail_after_callback(
        self, queue: str, callback: bytes, task_id: str, error: bytes
    ) -> None:
        """A chord's callback fails unrun: so do the chain steps after it (a group
        inside a chain). Done before the chord is marked fired, so a forwarder that
        stops in between does both again (each is idempotent)."""
        envelope = decode_envelope(verify(callback, None))
        member = envelope.member
        if envelope.then is None and member is None:
            return
        rows: list[Handoff] = []
        later = _callback_failure(task_id, error)
        if member is not None:  # the chord is itself a member of a chord
            failed = encode_member_failure(task_id, TaskStatus.FAILED.value, error)
            rows.append(
                (member.queue, member.chord, str(member.index), b"f" + failed, HANDOFF_CHORD)
            )
        _fail_from(envelope.then, later, rows)
        by_queue: dict[str, list[Handoff]] = {}
        for row in rows:
            by_queue.setdefault(row[0], []).append(row)
        broker = self._broker()
        for target, handoffs in by_queue.items():
            parents = [(task_id, queue)] * len(handoffs)
            _enqueued, complete = await broker.forward(target, handoffs, parents)
            for chord_id in complete:
                await self.fire(target, chord_id)

    async def fire(self, queue: str, chord_id: str) -> bool:
        """Every member of the chord has ended: enqueue its callback (or fail it)."""
        broker = self._broker()
        state = await broker.chord_state(queue, chord_id)
        if not state or b"fired" in state:
            return False
        size = int(state[b"n"])
        outcomes = [state.get(b"m:%d" % i, b"") for i in range(size)]
        task_id, name = state[b"cbid"].decode(), state[b"cbname"].decode()
        failures = [(i, o[1:]) for i, o in enumerate(outcomes) if not o.startswith(b"s")]
        if failures and state.get(b"allow") != b"1":
            error = _chord_failure(failures, size)
            await self._fail_after_callback(queue, state[b"cb"], task_id, error)
            return await broker.fire_chord(queue, chord_id, task_id, name, True, error)
        values = [
            msgspec.Raw(o[1:])
            if o.startswith(b"s")
            else msgspec.msgpack.Ext(FAILED_MEMBER_EXT, o[1:])
            for o in outcomes
        ]
        callback = self.codec.unpack(state[b"cb"])
        args = [values, *_raw_args.decode(callback.args)]
        callback = msgspec.structs.replace(callback, args=msgspec.Raw(_encode(args)))
        return await broker.fire_chord(
            queue, chord_id, task_id, name, False, self.codec.pack(callback)
        )


def _handed_by(field: bytes) -> str:
    """The id of the step whose hand-offs an outbox field holds: finish.lua names the
    field '<n>:<step id>' (older workers: '<n>', the id not known: "")."""
    return field.partition(b":")[2].decode("utf-8", "replace")


def _callback_failure(task_id: str, error: bytes) -> bytes:
    """The error of a step after a chord callback that failed."""
    failure = decode_error(error)
    return encode_error(
        ErrorInfo(
            failure.type,
            f"an earlier step of the chain (task {task_id}) ended failed: {failure.message}",
        )
    )


def _chord_failure(failures: list[tuple[int, bytes]], size: int) -> bytes:
    """The error of a chord whose members failed: every failure, in group order."""
    described = []
    first_type = "aqueue.TaskFailed"
    for n, (index, data) in enumerate(failures):
        try:
            task_id, state, exc_type, message, _tb = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, ValueError):
            task_id, state, exc_type, message = "?", "failed", "Unknown", "no outcome recorded"
        if n == 0:
            first_type = exc_type
        described.append(f"#{index} (task {task_id}, {state}) {exc_type}: {message}")
    return encode_error(
        ErrorInfo(
            first_type,
            f"{len(failures)} of {size} chord members failed: " + "; ".join(described),
        )
    )
