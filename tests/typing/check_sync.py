"""Checked by mypy --strict from tests/test_integrations.py: ``delay`` keeps types."""

from __future__ import annotations

from typing import assert_type

import aqueue
from aqueue.sync import SyncResult

app = aqueue.App("redis://localhost:6379/0")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
def resize(path: str, width: int = 100) -> str:
    return path


def use() -> None:
    r = add.delay(1, 2)
    assert_type(r, SyncResult[int])
    assert_type(r.get(timeout=5.0), int)
    assert_type(r.ready(), bool)
    assert_type(resize.delay("a.png", width=3), SyncResult[str])
    assert_type(add.options(queue="high").delay(1, 2), SyncResult[int])
    add.delay("a", 2)  # type: ignore[arg-type]
    add.delay(1)  # type: ignore[call-arg]
