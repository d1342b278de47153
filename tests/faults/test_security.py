"""Signed messages, masked passwords, Redis ACL users."""

from __future__ import annotations

import asyncio

import redis

import aqueue
from aqueue import TaskStatus

from ..conftest import redis_server, wait_until
from .conftest import Counts, Workers, producer

SECRET = "Sekr1t-Pa55word"


async def test_signing_key_dead_letters_unsigned_and_forged_messages(
    redis_url: str, prefix: str, workers: Workers, counts: Counts
) -> None:
    worker = workers.start("-c", "4", AQUEUE_SIGNING_KEY="the-right-key")
    async with (
        producer(redis_url, prefix) as unsigned,
        producer(redis_url, prefix, signing_key="a-wrong-key") as forged,
        producer(redis_url, prefix, signing_key="the-right-key") as signed,
    ):
        bad1 = await unsigned.tasks["faults.mark"].enqueue("unsigned")
        bad2 = await forged.tasks["faults.mark"].enqueue("forged")
        good = await signed.tasks["faults.mark"].enqueue("signed")
        assert await asyncio.wait_for(good.get(), 20) == 1
        await wait_until(lambda: counts.client.xlen(f"{prefix}:{{default}}:dead") == 2, 20)
        letters = {d.task_id: d for d in await signed.dead_letters()}
        assert set(letters) == {bad1.id, bad2.id}
        assert {d.reason for d in letters.values()} == {"bad_signature"}
        assert "not signed" in letters[bad1.id].error
        assert "does not match" in letters[bad2.id].error
        assert await bad1.status() is TaskStatus.DEAD
        assert await bad2.status() is TaskStatus.DEAD
        assert counts.started(["unsigned", "forged", "signed"]) == [0, 0, 1]
        assert worker.alive
        assert "the-right-key" not in worker.output()


def test_passwords_are_masked() -> None:
    app = aqueue.App(f"redis://aq:{SECRET}@127.0.0.1:1/0", signing_key="hmac-secret-value")
    for text in (repr(app), repr(app.settings), str(app.settings)):
        assert SECRET not in text and "hmac-secret-value" not in text
        assert "***" in text


async def test_acl_user_with_password(prefix: str, workers: Workers) -> None:
    with redis_server() as srv:
        admin = redis.Redis(port=srv.port)
        admin.acl_setuser(
            "aq",
            enabled=True,
            passwords=[f"+{SECRET}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        # From now on nobody gets in without a password.
        admin.config_set("requirepass", "default-user-password")
        admin.close()
        url = f"redis://aq:{SECRET}@127.0.0.1:{srv.port}/0"

        worker = workers.start("-c", "4", url=url)
        async with producer(url, prefix) as app:
            handle = await app.tasks["faults.mark"].enqueue("acl")
            assert await asyncio.wait_for(handle.get(), 30) == 1
            assert SECRET not in repr(app)

        out = worker.output()
        assert f"redis://aq:***@127.0.0.1:{srv.port}/0" in out, out
        assert SECRET not in out
        assert worker.alive

        wrong = producer(f"redis://aq:not-it@127.0.0.1:{srv.port}/0", prefix)
        try:
            try:
                await wrong.tasks["faults.mark"].enqueue("nope")
            except aqueue.ConnectionFailed as exc:
                assert "not-it" not in str(exc)
            else:
                raise AssertionError("enqueue with a wrong password succeeded")
        finally:
            await wrong.close()
