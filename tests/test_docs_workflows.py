"""Every code block of docs/workflows.md runs, and each ``example_*`` passes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import aqueue

from .conftest import running_worker

DOC = Path(__file__).resolve().parent.parent / "docs" / "workflows.md"


def _blocks() -> str:
    return "\n\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S))


async def test_workflows_doc_examples_run(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AQUEUE_REDIS_URL", redis_url)
    monkeypatch.setenv("AQUEUE_PREFIX", prefix)
    namespace: dict[str, Any] = {"__name__": "docs_workflows"}
    exec(compile(_blocks(), str(DOC), "exec"), namespace)
    app: aqueue.App = namespace["app"]
    examples = [name for name in namespace if name.startswith("example_")]
    assert len(examples) >= 5
    try:
        async with running_worker(app, beat=False):
            for name in examples:
                await namespace[name]()
    finally:
        await app.close()
