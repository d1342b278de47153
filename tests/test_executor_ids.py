"""The executor runs a message only under its own id (no Redis needed)."""

from __future__ import annotations

import concurrent.futures
import time

import msgspec

import aqueue
from aqueue.core.protocol import WIRE_VERSION, Codec, Delivery, Envelope
from aqueue.core.status import TaskStatus
from aqueue.runtime.executor import Executor, Job


def test_a_message_filed_under_another_id_is_dead_lettered() -> None:
    app = aqueue.App("redis://127.0.0.1:1/0", signing_key="k")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    codec = Codec("k")
    payload = codec.pack(
        Envelope(
            v=WIRE_VERSION,
            id="the-real-id",
            task=add.name,
            args=msgspec.Raw(msgspec.msgpack.encode([1, 2])),
            kwargs=msgspec.Raw(msgspec.msgpack.encode({})),
            queue="default",
            enqueued_at=time.time(),
        )
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        executor = Executor(app.tasks, codec, app.settings, pool)
        refused = executor.prepare(Delivery("default", "1-0", "another-id", payload), time.time())
        assert not isinstance(refused, Job)
        assert refused.state is TaskStatus.DEAD and refused.reason == "id_mismatch"
        assert refused.task_id == "another-id"
        ok = executor.prepare(Delivery("default", "1-1", "the-real-id", payload), time.time())
        assert isinstance(ok, Job) and ok.envelope.id == "the-real-id"
