"""The README's description of retry backoff and jitter is what the worker does."""

from __future__ import annotations

from pathlib import Path

import aqueue

README = Path(__file__).resolve().parent.parent / "README.md"


def test_backoff_and_jitter_are_on_by_default_and_documented() -> None:
    text = " ".join(README.read_text().split())
    assert "Retries back off and jitter by default" in text
    assert "`retry_delay=0.5` therefore waits 0.25-0.5 s, then 0.5-1 s, then 1-2 s" in text

    app = aqueue.App()

    @app.task(retries=3, retry_delay=0.5)
    async def flaky() -> None:
        return None

    config = flaky.config
    assert config.retry_backoff and config.retry_jitter
    # jitter in [0, 1) scales the delay by 0.5 .. 1.
    for retries_done, (low, high) in enumerate([(0.25, 0.5), (0.5, 1.0), (1.0, 2.0)]):
        assert config.retry_delay_for(retries_done, 0.0) == low
        assert high * 0.99 < config.retry_delay_for(retries_done, 0.999) < high

    @app.task(retries=3, retry_delay=0.5, retry_backoff=False, retry_jitter=False)
    async def fixed() -> None:
        return None

    assert [fixed.config.retry_delay_for(n, 0.3) for n in range(3)] == [0.5, 0.5, 0.5]
