"""``aqueue worker --log-format json``: python-json-logger, one object per line,
with the task fields and the tasks' own ``extra=`` fields."""

from __future__ import annotations

import json

import pytest

import aqueue

from .conftest import start_cli_worker
from .ops_support import stop

pytest.importorskip("pythonjsonlogger")


async def test_task_lines_and_user_extra_fields(redis_url: str, prefix: str) -> None:
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="logging_app.charge")
    async def charge(customer: str, cents: int) -> int:
        raise NotImplementedError

    worker = start_cli_worker(redis_url, prefix, "logging_app:app", "--log-format", "json")
    try:
        async with app:
            ok = await charge.enqueue("ada", 250)
            bad = await charge.enqueue("bob", -1)
            assert await ok.get(timeout=20) == 250
            with pytest.raises(aqueue.TaskFailed):
                await bad.get(timeout=20)
    finally:
        assert stop(worker) == 0
    assert worker.stdout is not None
    lines = [line for line in worker.stdout.read().decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert all(r["time"].endswith("+00:00") for r in records)
    mine = [r for r in records if r["logger"] == "logging_app"]
    assert [(r["customer"], r["cents"]) for r in mine] == [("ada", 250), ("bob", -1)]
    by_task = {r["task_id"]: r for r in records if "outcome" in r}
    done, failed = by_task[ok.id], by_task[bad.id]
    for line, outcome in ((done, "succeeded"), (failed, "failed")):
        assert line["outcome"] == outcome
        assert line["task_name"] == "logging_app.charge"
        assert line["queue"] == "default" and line["attempt"] == 1
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "ValueError" in failed["message"]
