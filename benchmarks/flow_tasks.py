"""Tasks for benchmarks/flow_control.py (importable by name: task processes and
``aqueue worker flow_tasks:app`` import them)."""

from __future__ import annotations

import aqueue

app = aqueue.App()


@app.task
def double_in_thread(n: int) -> int:
    return n * 2


@app.task(executor="process")
def double_in_process(n: int) -> int:
    return n * 2


@app.task
async def noop(n: int) -> int:
    return n
