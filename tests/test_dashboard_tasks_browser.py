"""The dashboard's tasks pages in a real headless Chromium, with a real ``aqueue worker``.

Tasks by state and their filters, running a failed task again, a task's
progress bar, stream chunks and timeline, a redacted task, the latency
chart. Each test saves a screenshot under ``tests/.output/`` (not committed).
"""

from __future__ import annotations

import asyncio
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


def test_a_dashboard_opened_later_shows_the_burst_attempts_and_chain_links(
    browser: Any, redis_url: str, prefix: str
) -> None:
    # Events on in the producer, the worker and the dashboard.
    app = aqueue.App(redis_url, prefix=prefix, events=True)

    @app.task(name="dashboard_tasks_app.refund")
    async def refund(order: int) -> str:
        return ""

    worker = start_cli_worker(redis_url, prefix, APP, AQUEUE_EVENTS="1")
    dashboard = None
    try:
        burst = [refund.delay(2000 + n) for n in range(6)]  # each fails on its first run
        last = asyncio.run(_send_chain(redis_url, prefix))  # step 1 fails: so does step 2
        for handle in burst:
            with pytest.raises(aqueue.TaskFailed):
                handle.get(timeout=30)
        stop(worker)
        worker = None
        # The dashboard starts after all of that: it reads it back from the events.
        dashboard, base = start_dashboard(redis_url, prefix, app=APP, AQUEUE_EVENTS="1")

        def listed(driver: Any) -> bool:  # the page is not live: load it again
            driver.get(base + "/tasks?state=failed")
            return all(h.id in text_of(driver, "main") for h in burst)

        until(browser, listed)
        assert "read back from the event stream" in text_of(browser, "main")
        screenshot(browser, "tasks-read-back")
        browser.get(base + "/")
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".chart.latency rect"))
        assert "charts go back to" in text_of(browser, "#charts-from")
        assert browser.find_elements(By.CSS_SELECTOR, ".chart:not(.latency) rect")  # throughput
        screenshot(browser, "overview-read-back")
        browser.get(base + f"/tasks/{burst[0].id}")
        until(browser, lambda d: "Attempts" in text_of(d, "main"))
        attempts = text_of(browser, "#attempts")
        assert "the bank refused refund 2000" in attempts and "failed" in attempts
        assert "every attempt, from the event stream" in attempts
        browser.execute_script("document.getElementById('attempts').scrollIntoView()")
        screenshot(browser, "task-attempts")
        # The chain's failed first step (its record keeps its message) links the next.
        assert last.parent is not None
        browser.get(base + f"/tasks/{last.parent.id}")
        until(browser, lambda d: d.find_elements(By.LINK_TEXT, last.id))
        assert "next step (dashboard_tasks_app.refund)" in text_of(browser, "ul.follows")
        screenshot(browser, "task-chain-link")
        browser.find_element(By.LINK_TEXT, last.id).click()
        until(browser, lambda d: text_of(d, '[data-figure="state"]') == "failed")
        assert "an earlier step of the chain" in text_of(browser, "main")
    finally:
        if worker is not None:
            stop(worker)
        if dashboard is not None:
            stop(dashboard)
        app.close_sync()


async def _send_chain(redis_url: str, prefix: str) -> aqueue.AsyncResult[Any]:
    app = aqueue.App(redis_url, prefix=prefix, events=True)

    @app.task(name="dashboard_tasks_app.refund")
    async def refund(order: int) -> str:
        return ""

    try:
        return await aqueue.chain(refund.si(3000), refund.si(3001)).enqueue()
    finally:
        await app.close()
