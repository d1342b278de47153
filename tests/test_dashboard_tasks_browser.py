"""The dashboard's tasks pages in a real headless Chromium, with a real ``aqueue worker``.

Tasks by state and their filters, running a failed task again, a task's
progress bar, stream chunks and timeline, a redacted task, the latency
chart. Each test saves a screenshot under ``tests/.output/`` (not committed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import aqueue

from .conftest import start_cli_worker
from .ops_support import stop, wait_for
from .test_dashboard_browser import (
    browser,
    confirm,
    screenshot,
    start_dashboard,
    text_of,
    until,
)

APP = "dashboard_tasks_app:app"

__all__ = ["browser"]  # the fixture, shared with the other browser tests

from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def producer(redis_url: str, prefix: str) -> Iterator[dict[str, Any]]:
    """The tasks of tests/apps/dashboard_tasks_app.py on this test's prefix."""
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="dashboard_tasks_app.refund")
    async def refund(order: int) -> str:
        return ""

    @app.task(name="dashboard_tasks_app.import_rows")
    async def import_rows(rows: int) -> list[str]:
        return []

    @app.task(name="dashboard_tasks_app.store_card")
    async def store_card(number: str) -> str:
        return ""

    try:
        yield {"app": app, **{t.name.partition(".")[2]: t for t in app.tasks.values()}}
    finally:
        app.close_sync()


def test_failed_tasks_are_listed_filtered_and_run_again(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    dashboard, base = start_dashboard(redis_url, prefix, app=APP)
    worker = start_cli_worker(redis_url, prefix, APP)
    try:
        browser.get(base + "/tasks")  # the dashboard listens for outcomes from now on
        failed = producer["refund"].delay(41)
        with pytest.raises(aqueue.TaskFailed):
            failed.get(timeout=30)
        stored = producer["store_card"].delay("4111 1111 1111 1111")
        assert stored.get(timeout=30).startswith("stored")
        browser.find_element(By.LINK_TEXT, "failed").click()
        until(browser, lambda d: failed.id in text_of(d, "main"))
        assert "ConnectionError" in text_of(browser, "main")
        # Filter by a part of another task's name: the failed refund goes away.
        browser.find_element(By.NAME, "name").send_keys("store")
        browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
        until(browser, lambda d: "matches these filters" in text_of(d, "main"))
        browser.find_element(By.LINK_TEXT, "succeeded").click()
        until(browser, lambda d: stored.id in text_of(d, "main"))
        screenshot(browser, "tasks-succeeded-filtered")
        browser.get(base + "/tasks?state=failed")
        until(browser, lambda d: failed.id in text_of(d, "main"))
        screenshot(browser, "tasks-failed")
        browser.find_element(By.LINK_TEXT, failed.id).click()
        until(browser, lambda d: "Run this task again" in text_of(d, "main"))
        assert "[41]" in text_of(browser, "pre.args")
        confirm(browser, "Run this task again")
        until(browser, lambda d: d.find_elements(By.ID, "notice"))
        assert "is back in queue default" in browser.find_element(By.ID, "notice").text
        assert failed.get(timeout=30) == "refund 41 done on run 2"
        until(browser, lambda d: text_of(d, '[data-figure="state"]') == "succeeded")
        screenshot(browser, "task-run-again")
        # A redacted task's page shows neither its card number nor its result.
        browser.get(base + f"/tasks/{stored.id}")
        until(browser, lambda d: text_of(d, '[data-figure="state"]') == "succeeded")
        assert "4111" not in browser.page_source and "(redacted)" in text_of(browser, "main")
        screenshot(browser, "task-redacted")
    finally:
        stop(worker)
        stop(dashboard)


def test_a_streaming_task_shows_progress_chunks_and_timeline(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    dashboard, base = start_dashboard(redis_url, prefix, app=APP)
    worker = start_cli_worker(redis_url, prefix, APP, IMPORT_PAUSE="10")
    try:
        handle = producer["import_rows"].delay(6)
        wait_for(lambda: handle.status() is aqueue.TaskStatus.RUNNING, timeout=30)
        browser.get(base + f"/tasks/{handle.id}")
        # Half-way, paused: the progress bar and the first chunks, pushed live.
        until(browser, lambda d: "row 3 of 6" in text_of(d, "main"))
        value = browser.find_element(By.TAG_NAME, "progress").get_attribute("value")
        assert float(value) == pytest.approx(0.5)
        until(browser, lambda d: "Stream (3 chunks)" in text_of(d, "main"))
        assert "attempt 1 started" in text_of(browser, "ol.timeline")
        screenshot(browser, "task-progress-stream")
        # The overview draws the time from enqueue to finish of what finished.
        quick = [producer["refund"].delay(1000 + n) for n in range(5)]
        for h in quick:
            with pytest.raises(aqueue.TaskFailed):
                h.get(timeout=30)
        browser.get(base + "/")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chart.latency rect"), 30)
        screenshot(browser, "overview-latency")
    finally:
        stop(worker)
        stop(dashboard)
