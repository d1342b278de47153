"""Workflows on a real Redis Cluster: every script single-slot, members sent per slot.

The queues are chosen so that their slots sit on the three different masters
of the session cluster: a chord's members and its callback then live on
different nodes, as they would in production.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator

import aqueue
from aqueue.canvas import chain
from aqueue.core.keys import QueueKeys
from aqueue.groups import chord, group

from ..conftest import running_worker
from ..topologies import ClusterTopology

#: One queue per master: slots 2076, 6983 and 15495 (ranges 0-5460, 5461-10922, 10923-16383).
QUEUES = ("words", "numbers", "a")


def masters_of(cluster: ClusterTopology, prefix: str) -> set[int]:
    return {cluster.slot_owner(QueueKeys(prefix, q).stream).port for q in QUEUES}


async def test_chain_group_and_chord_across_three_masters(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    assert len(masters_of(cluster, prefix)) == 3  # the queues really are spread out
    app = aqueue.App(cluster.url, prefix=prefix)
    runs: collections.Counter[str] = collections.Counter()

    @app.task(queue="numbers")
    async def add(x: int, y: int) -> int:
        runs["add"] += 1
        return x + y

    @app.task(queue="words")
    async def spell(n: int) -> str:
        runs["spell"] += 1
        return "x" * n

    @app.task(queue="a")
    async def length(word: str, extra: int = 0) -> int:
        runs["length"] += 1
        return len(word) + extra

    @app.task(queue="words")
    async def count_letters(word: str) -> int:
        runs["count_letters"] += 1
        return len(word)

    @app.task(queue="a")
    async def total(values: list[int]) -> int:
        runs["total"] += 1
        return sum(values)

    try:
        async with running_worker(app, queues=list(QUEUES), concurrency=100):
            last = await chain(add.s(1, 2), spell, length.s(10)).enqueue()
            assert await last.get(timeout=30) == 13  # len("xxx") + 10

            n = 1_500  # over one script call's 1,000 members
            gr = await group(add.s(i, i) for i in range(n)).enqueue()
            assert await gr.get(timeout=120) == [2 * i for i in range(n)]

            # A chord whose members run on all three masters, its callback on one.
            members = [
                (add.s(i, 0), count_letters.s("x" * i), length.s("", i))[i % 3] for i in range(300)
            ]
            callback = await chord(group(members), total).enqueue()
            assert callback.queue == "a"
            assert await callback.get(timeout=60) == sum(range(300))
        assert runs["total"] == 1
        assert runs["add"] == 1 + n + 100
        assert runs["count_letters"] == 100
        assert runs["spell"] == 1
        assert runs["length"] == 1 + 100
    finally:
        await app.close()


async def test_a_stream_reads_its_chunks_on_the_cluster(
    cluster: ClusterTopology, prefix: str
) -> None:
    cluster.wait_healthy()
    app = aqueue.App(cluster.url, prefix=prefix)

    @app.task(queue="a")
    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    try:
        async with running_worker(app, queues=["a"]):
            r = await numbers.enqueue(3_000)
            seen: list[int] = []
            first = r.stream()
            async for chunk in first:
                seen.append(chunk)
                if len(seen) == 1_000:
                    break
            assert first.position is not None
            seen += [chunk async for chunk in r.stream(after=first.position)]
            assert seen == list(range(3_000))
            assert await r.get(timeout=30) == list(range(3_000))
    finally:
        await app.close()
