"""Every code block of docs/workflows.md runs, and each ``example_*`` passes."""

from __future__ import annotations

import pytest

from .docs_support import run_doc_examples


async def test_workflows_doc_examples_run(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_doc_examples("workflows.md", redis_url, prefix, monkeypatch, at_least=9)
