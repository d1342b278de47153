"""Running a doc's Python blocks as one program, then each of its ``example_*`` coroutines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import aqueue

from .conftest import ROOT, running_worker


async def run_doc_examples(
    doc: str, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, at_least: int
) -> None:
    """Exec every ```python block of ``docs/<doc>`` and await its examples on a worker."""
    path = ROOT / "docs" / doc
    code = "\n\n".join(re.findall(r"```python\n(.*?)```", Path(path).read_text(), flags=re.S))
    monkeypatch.setenv("AQUEUE_REDIS_URL", redis_url)
    monkeypatch.setenv("AQUEUE_PREFIX", prefix)
    namespace: dict[str, Any] = {"__name__": f"docs_{Path(doc).stem}"}
    exec(compile(code, str(path), "exec"), namespace)
    app: aqueue.App = namespace["app"]
    examples = [name for name in namespace if name.startswith("example_")]
    assert len(examples) >= at_least
    try:
        async with running_worker(app, beat=False):
            for name in examples:
                await namespace[name]()
    finally:
        await app.close()
