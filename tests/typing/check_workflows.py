"""Checked by ``mypy --strict`` (see tests/test_typing.py); never imported.

Signatures are typed like ``enqueue``; a chain follows each step's value into
the next step's parameter; a group's values keep the members' type.
"""

from __future__ import annotations

from typing import Any, assert_type

import aqueue
from aqueue import (
    AsyncResult,
    Chain,
    Chord,
    Group,
    GroupResult,
    Signature,
    TaskFailed,
    chain,
    chord,
    group,
)

app = aqueue.App("redis://localhost:6379/0")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def half(x: float) -> float:
    return x / 2


@app.task
def spell(n: int) -> str:
    return "x" * n


@app.task
async def shout(word: str) -> str:
    return word.upper()


@app.task
async def total(values: list[int]) -> int:
    return sum(values)


@app.task
async def joined(words: list[str], sep: str) -> str:
    return sep.join(words)


async def use() -> None:
    assert_type(add.s(1, 2), Signature[int])
    assert_type(add.si(1, 2), Signature[int])
    assert_type(add.s(1, 2).options(queue="high"), Signature[int])
    assert_type(add.options(queue="high").s(1, 2), Signature[int])
    add.s("a", 2)  # type: ignore[arg-type]
    add.s(1, 2, 3)  # type: ignore[call-arg]

    # Each step's first parameter must accept the value before it (int -> float is fine).
    assert_type(chain(add.s(1, 2), half), Chain[float])
    assert_type(chain(add.s(1, 2), spell, shout), Chain[str])
    assert_type(add.s(1, 2) | spell | shout, Chain[str])
    assert_type(chain(add.s(1, 2), spell, add.si(3, 4)), Chain[int])
    last = await chain(add.s(1, 2), spell, shout).enqueue()
    assert_type(last, AsyncResult[str])
    assert_type(await last, str)
    assert_type(last.parent, AsyncResult[Any] | None)
    chain(add.s(1, 2), shout)  # type: ignore[misc]
    add.s(1, 2) | shout  # type: ignore[operator]

    gr = await group(add.s(i, i) for i in range(10)).enqueue()
    assert_type(gr, GroupResult[int])
    assert_type(await gr, list[int])
    assert_type(await gr.get(timeout=5.0), list[int])
    assert_type(await gr.get(return_exceptions=True), list[int | TaskFailed])
    assert_type(await gr.completed(), int)
    async for member in gr.as_completed():
        assert_type(member, AsyncResult[int])

    # A chord's callback takes the list of the members' values.
    assert_type(chord(group(add.s(i, i) for i in range(10)), total), Chord[int])
    # Where the typing stops: a step (or callback) that takes its parent's value
    # *and* arguments of its own. mypy can't split the first parameter off a
    # task's ParamSpec, so it reports the value as missing; it runs as intended.
    with_sep = joined.s(",")  # type: ignore[call-arg, arg-type]
    assert_type(chord(group(spell.s(i) for i in range(3)), with_sep), Chord[str])
    assert_type(await chord(group([add.s(1, 1)]), total).enqueue(), AsyncResult[int])
    chord(group(spell.s(i) for i in range(3)), total)  # type: ignore[misc]


@app.task
async def concat(words: list[str]) -> str:
    return "".join(words)


@app.task
async def mean(values: list[float]) -> float:
    return sum(values) / len(values)


async def shapes() -> None:
    # A group's members as arguments, or as one iterable.
    assert_type(group(add.s(1, 1), add.s(2, 2)), Group[int])
    # A group inside a chain: each member takes the value before it (a member
    # is a task itself, or task.s(...) with arguments after that value), and
    # the step after the group takes the list of their values (a chord).
    assert_type(group(half, half), Group[float])
    assert_type(chain(add.s(1, 2), group(half, half), mean), Chain[float])
    assert_type(chain(add.s(1, 2), group(spell, spell), concat), Chain[str])
    assert_type(add.s(1, 2) | group(half, half) | mean, Chain[float])
    assert_type(group(add.s(1, 1), add.s(2, 2)) | total, Chain[int])
    assert_type(chain(group(add.s(1, 1), add.s(2, 2)), total), Chain[int])
    r = await chain(add.s(1, 2), group(half, half), mean).enqueue()
    assert_type(r, AsyncResult[float])
    # The step after a group must take a list of the members' type.
    chain(add.s(1, 2), group(half, half), total)  # type: ignore[misc]
    group(half, half) | total  # type: ignore[operator]
    # Where the typing stops: the members' first parameter is not checked
    # against the value before the group (the worker checks it when it runs).
    # Here shout (str) gets 3 (int) and is refused by the worker: bad_arguments.
    assert_type(chain(add.s(1, 2), group(shout, shout), concat), Chain[str])
    # A chain inside a group: the member's value is its last step's.
    assert_type(group([chain(add.s(1, 2), spell), spell.s(2)]), Group[str])
    assert_type(group(chain(add.s(1, 2), spell), spell.s(2)), Group[str])
