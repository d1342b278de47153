"""A workflow step's page names the step that handed it on and, once the step has
succeeded (its message gone), the steps it handed on to: against a real Redis,
a real worker, and the page's HTML.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

import aqueue
from aqueue.dashboard import asgi_app, serve

from .conftest import running_worker


@pytest.fixture
async def http(app: aqueue.App) -> AsyncIterator[httpx.AsyncClient]:
    web = asgi_app(app)
    server = await serve(web, "127.0.0.1", 0)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        await client.aclose()
        await server.close()
        await web.close()


def _link(how: str, task_id: str, queue: str) -> str:
    return f'<li>{how}: <a href="/tasks/{task_id}?queue={queue}">{task_id}</a></li>'


async def test_a_chain_of_three_links_each_step_to_its_parent_and_children(
    app: aqueue.App, http: httpx.AsyncClient
) -> None:
    @app.task(name="wfp.add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="wfp.double", queue="other")
    async def double(n: int) -> int:
        return n * 2

    last = await aqueue.chain(add.s(1, 2), double, add.s(4)).enqueue()
    assert last.parent is not None and last.parent.parent is not None
    first, second = last.parent.parent, last.parent
    async with running_worker(app, queues=["default", "other"]):
        assert await last.get(timeout=15) == 10
    broker = app.client.broker

    # The records: parent (id and queue) on the steps aqueue enqueued, what was
    # handed on on the steps that ended with hand-offs, all with the record's TTL.
    second_record = await broker.client.hgetall(broker.keys("other").task(second.id))
    assert second_record[b"parent"] == first.id.encode()
    assert second_record[b"pq"] == b"default"
    last_record = await broker.client.hgetall(broker.keys("default").task(last.id))
    assert last_record[b"parent"] == second.id.encode()
    assert last_record[b"pq"] == b"other"
    assert b"next" not in last_record  # the last step hands nothing on
    handed: Any = msgspec.msgpack.decode(second_record[b"next"])
    assert handed == [1, "default", last.id, 0]
    first_record = await broker.client.hgetall(broker.keys("default").task(first.id))
    assert b"parent" not in first_record  # sent by the producer
    ttl = await broker.client.pttl(broker.keys("other").task(second.id))
    assert 0 < ttl <= app.settings.result_ttl * 1000

    # The pages: every step succeeded, so their messages are gone.
    html = (await http.get(f"/tasks/{first.id}")).text
    assert _link("handed on to", second.id, "other") in html
    assert "handed on by" not in html
    html = (await http.get(f"/tasks/{second.id}", params={"queue": "other"})).text
    assert _link("handed on by", first.id, "default") in html
    assert _link("handed on to", last.id, "default") in html
    html = (await http.get(f"/tasks/{last.id}")).text
    assert _link("handed on by", second.id, "other") in html
    assert "handed on to" not in html


async def test_a_chord_callback_names_its_chord_and_members_link_to_it(
    app: aqueue.App, http: httpx.AsyncClient
) -> None:
    @app.task(name="wfp.square")
    async def square(n: int) -> int:
        return n * n

    @app.task(name="wfp.total")
    async def total(values: list[int]) -> int:
        return sum(values)

    made = aqueue.chord(aqueue.group(square.s(2), square.s(3)), total)
    callback = await made.enqueue()
    assert made.members is not None
    members = made.members.results
    # A group inside a chain: a chord whose callback is the step after the group.
    after = await aqueue.chain(square.s(1), aqueue.group(square, square), total).enqueue()
    head = after.parent  # the step before the group
    assert head is not None
    async with running_worker(app):
        assert await callback.get(timeout=15) == 13
        assert await after.get(timeout=15) == 2

    html = (await http.get(f"/tasks/{callback.id}")).text
    assert f"callback of chord {made.id} (2 members)" in html
    for member in members:
        html = (await http.get(f"/tasks/{member.id}")).text
        assert (
            f'<li>counted in chord {made.id}: wfp.total fired: <a href="/tasks/{callback.id}'
            in html
        )

    # The step before the group handed on to both members; the step after the
    # group names the chord that fired it.
    broker = app.client.broker
    handed: Any = msgspec.msgpack.decode(
        await broker.client.hget(broker.keys("default").task(head.id), "next")
    )
    assert handed[0] == 2 and handed[3::3] == [0, 0]
    html = (await http.get(f"/tasks/{head.id}")).text
    for member_id in handed[2::3]:
        assert _link("handed on to", member_id, "default") in html
        page = (await http.get(f"/tasks/{member_id}")).text
        assert _link("handed on by", head.id, "default") in page
    html = (await http.get(f"/tasks/{after.id}")).text
    assert "callback of chord " in html


async def test_a_failed_step_and_a_wide_group_keep_a_bounded_next(
    app: aqueue.App, http: httpx.AsyncClient
) -> None:
    @app.task(name="wfp.boom")
    async def boom(n: int) -> int:
        raise ValueError(f"no {n}")

    @app.task(name="wfp.one")
    async def one(n: int) -> int:
        return n

    @app.task(name="wfp.count")
    async def count(values: list[int]) -> int:
        return len(values)

    failing = await aqueue.chain(boom.s(1), one, one).enqueue()
    assert failing.parent is not None and failing.parent.parent is not None
    first, second = failing.parent.parent, failing.parent
    wide = await aqueue.chain(one.s(7), aqueue.group(*[one] * 25), count).enqueue()
    head = wide.parent
    assert head is not None
    async with running_worker(app):
        with pytest.raises(aqueue.TaskFailed):
            await failing.get(timeout=15)
        assert await wide.get(timeout=15) == 25
    broker = app.client.broker

    # The failed step handed on failures (kind 1) for both later steps, and each
    # of them names it as the step that handed it on.
    handed: Any = msgspec.msgpack.decode(
        await broker.client.hget(broker.keys("default").task(first.id), "next")
    )
    assert handed == [2, "default", second.id, 1, "default", failing.id, 1]
    for later in (second, failing):
        html = (await http.get(f"/tasks/{later.id}")).text
        assert _link("handed on by", first.id, "default") in html

    # 25 members handed on at once: the record keeps the count and the first 20.
    handed = msgspec.msgpack.decode(
        await broker.client.hget(broker.keys("default").task(head.id), "next")
    )
    assert handed[0] == 25 and len(handed) == 1 + 3 * 20
    html = (await http.get(f"/tasks/{head.id}")).text
    assert html.count("<li>handed on to: ") == 20
    assert "<li>and 5 more hand-offs</li>" in html
