"""A workflow step's neighbours for its task page, as far as Redis still knows them.

A step's message carries what comes after it: a chain's next step (whose own
message carries the step after it, and so on), a group inside the chain (its
members' first steps, counted by a chord whose callback is the step after the
group), and, for a chord member, the chord that counts it. The chord's hash
names its callback and counts its members until the callback is enqueued.

A step's record adds what its message can't tell (:func:`record_links`): the
forwarder that enqueued it (``forward.lua``) names the step that handed it on
(``parent``, ``pq``: its id and queue), a chord's callback names its chord
(``chord``; the members' ids are not kept), and a step that ended with hand-offs
(``finish.lua``) keeps the ids it handed on to (``next``, the first 20), so a
succeeded step, whose message is gone, still links to them. Steps enqueued by
older workers, and delayed steps, have no ``parent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..client import Client
from ..core.handoffs import HANDOFF_CHORD, HANDOFF_FAIL
from ..core.protocol import ChainLink, Envelope, MessageError

__all__ = ["STEPS_SHOWN", "WorkflowLink", "record_links", "workflow_links"]

_handed_on = msgspec.msgpack.Decoder(list[Any])

#: Later steps (and group members) listed at most.
STEPS_SHOWN = 50


@dataclass(frozen=True)
class WorkflowLink:
    """One neighbour: what it is to this task, its queue and id (None: not known)."""

    how: str
    queue: str
    task_id: str | None


async def workflow_links(client: Client, envelope: Envelope) -> list[WorkflowLink]:
    """What runs after this step (chain steps, group members, chord callbacks) and
    the chord it counts in, read from its message and the chords' hashes."""
    out: list[WorkflowLink] = []
    chords: dict[str, str] = {}  # chord id -> its callback's queue, to name the callback
    if envelope.member is not None:
        member = envelope.member
        chords[member.chord] = member.queue
        out.append(
            WorkflowLink(f"member {member.index} of chord {member.chord}", member.queue, None)
        )
    link, number = envelope.then, 1
    while link is not None and len(out) < STEPS_SHOWN:
        if link.members is not None:
            for index, member_link in enumerate(link.members[:STEPS_SHOWN]):
                step = _unpack(client, member_link)
                out.append(
                    WorkflowLink(
                        f"{_step(number)}, group member {index}"
                        + (f" ({step.task})" if step else ""),
                        member_link.queue,
                        step.id if step else None,
                    )
                )
                chord = _chord_of(client, step)
                if chord is not None:
                    chords.setdefault(chord, link.queue)
            out.append(await _callback(client, chords, link.queue, _step(number + 1)))
            return out  # the callback's message (and the steps after it) is in the chord
        step = _unpack(client, link)
        if step is None:
            out.append(WorkflowLink(f"{_step(number)} (unreadable message)", link.queue, None))
            break
        out.append(WorkflowLink(f"{_step(number)} ({step.task})", link.queue, step.id))
        if step.member is not None:
            chords.setdefault(step.member.chord, step.member.queue)
        link, number = step.then, number + 1
    if chords:  # this step, or a later one, counts in a chord
        queue = next(iter(chords.values()))
        out.append(await _callback(client, chords, queue, "chord callback"))
    return out


async def _callback(client: Client, chords: dict[str, str], queue: str, how: str) -> WorkflowLink:
    """The callback of the first chord found (from its hash, while it lasts)."""
    for chord, chord_queue in chords.items():
        state = await client.broker.chord_state(chord_queue, chord)
        if b"cbid" in state:
            done, size = state.get(b"done", b"0").decode(), state.get(b"n", b"?").decode()
            name = state.get(b"cbname", b"?").decode("utf-8", "replace")
            fired = " fired" if b"fired" in state else f" ({done} of {size} members ended)"
            return WorkflowLink(f"{how}: {name}{fired}", chord_queue, state[b"cbid"].decode())
    return WorkflowLink(f"{how} (its chord is gone)", queue, None)


async def record_links(
    client: Client, queue: str, record: dict[bytes, bytes], with_next: bool
) -> list[WorkflowLink]:
    """What the step's record names: the step that handed it on (or its chord) and,
    ``with_next``, what it handed on (``next``; for a step whose message is gone)."""
    out: list[WorkflowLink] = []
    parent = record.get(b"parent")
    if parent:
        parent_queue = record.get(b"pq", queue.encode()).decode("utf-8", "replace")
        out.append(WorkflowLink("handed on by", parent_queue, parent.decode("utf-8", "replace")))
    chord = record.get(b"chord")
    if chord:
        chord_id = chord.decode("utf-8", "replace")
        state = await client.broker.chord_state(queue, chord_id)
        size = f" ({state[b'n'].decode()} members)" if b"n" in state else ""
        out.append(WorkflowLink(f"callback of chord {chord_id}{size}", queue, None))
    if with_next and record.get(b"next"):
        try:
            handed = _handed_on.decode(record[b"next"])
        except msgspec.DecodeError:
            handed = []
        out.extend(await _handed_links(client, handed))
    return out


async def _handed_links(client: Client, handed: list[Any]) -> list[WorkflowLink]:
    """``next`` read back: the number of hand-offs, then (queue, id, kind) of the first."""
    if not handed:
        return []
    out: list[WorkflowLink] = []
    total, rows = handed[0], handed[1:]
    for at in range(0, len(rows) - 2, 3):
        queue, key, kind = str(rows[at]), str(rows[at + 1]), rows[at + 2]
        if kind == HANDOFF_CHORD:
            out.append(await _callback(client, {key: queue}, queue, f"counted in chord {key}"))
        elif kind == HANDOFF_FAIL:
            out.append(WorkflowLink("handed on to (failed, never ran)", queue, key))
        else:
            out.append(WorkflowLink("handed on to", queue, key))
    if isinstance(total, int) and total > len(rows) // 3:
        out.append(WorkflowLink(f"and {total - len(rows) // 3} more hand-offs", "", None))
    return out


def _step(number: int) -> str:
    return "next step" if number == 1 else f"step +{number}"


def _unpack(client: Client, link: ChainLink) -> Envelope | None:
    try:
        return client.codec.unpack(link.payload)
    except MessageError:
        return None


def _chord_of(client: Client, step: Envelope | None) -> str | None:
    """The chord that counts a group member (its chain's last step names it)."""
    for _ in range(STEPS_SHOWN):
        if step is None:
            return None
        if step.member is not None:
            return step.member.chord
        step = _unpack(client, step.then) if step.then is not None else None
    return None
