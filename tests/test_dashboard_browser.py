"""The dashboard in a real headless Chromium, watching a real ``aqueue worker``.

The browser is Debian's ``chromium`` with ``chromium-driver`` (``.ci/run``
installs them); nothing is downloaded. Without them these tests are skipped.
Each test saves a screenshot under ``tests/.output/`` (not committed).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import aqueue

from .conftest import ROOT, free_port, start_cli_worker, worker_env
from .ops_support import stop, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
OUTPUT = ROOT / "tests" / ".output"
APP = "dashboard_app:app"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "headless Chromium tests need /usr/bin/chromium and /usr/bin/chromedriver: "
        "apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def start_dashboard(
    redis_url: str, prefix: str, *args: str, app: str = APP, **env: str
) -> tuple[Any, str]:
    """``aqueue dashboard -A app`` on a free port, once it answers: (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aqueue", "dashboard", "-A", app, "--port", str(port), *args],
        env=worker_env(redis_url, prefix, **env),
        cwd=str(ROOT / "tests" / "apps"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(base + "/static/dashboard.css").status_code in (200, 401)
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=30)
    return proc, base


@pytest.fixture
def producer(redis_url: str, prefix: str) -> Iterator[dict[str, Any]]:
    """The tasks of tests/apps/dashboard_app.py on this test's prefix, for enqueueing here."""
    app = aqueue.App(redis_url, prefix=prefix)

    @app.task(name="dashboard_app.work")
    async def work(seconds: float) -> str:
        return "done"

    @app.task(name="dashboard_app.parse_invoice")
    async def parse_invoice(text: str) -> int:
        return 0

    @app.task(name="dashboard_app.fails_once")
    async def fails_once(key: str) -> str:
        return ""

    @app.task(name="dashboard_app.long_sleep")
    async def long_sleep(seconds: float) -> str:
        return ""

    try:
        yield {"app": app, **{t.name.partition(".")[2]: t for t in app.tasks.values()}}
    finally:
        app.close_sync()


def text_of(driver: Any, css: str) -> str:
    """The text of the first element matching ``css`` ('' when none), read in one step:
    live parts of a page are replaced as fresh figures arrive."""
    text: str = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css
    )
    return text


def figure(driver: Any, name: str) -> int:
    return int(text_of(driver, f'[data-figure="{name}"]') or -1)


def until(driver: Any, condition: Any, timeout: float = 30) -> Any:
    """Wait for a condition; the pushed figures replace elements while it is read."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(condition)


def confirm(driver: Any, link_text: str) -> None:
    """Click an action's link, then the confirmation page's button."""
    driver.find_element(By.LINK_TEXT, link_text).click()
    until(driver, lambda d: d.find_elements(By.ID, "confirm"))
    driver.find_element(By.ID, "confirm").click()


def test_overview_counts_move_while_a_real_worker_drains(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    handles = [producer["work"].delay(0.4) for _ in range(60)]
    dashboard, base = start_dashboard(redis_url, prefix)
    worker = None
    try:
        browser.get(base + "/")
        until(browser, lambda d: figure(d, "waiting") == 60)
        browser.execute_script("window.sameDocument = true")
        worker = start_cli_worker(redis_url, prefix, APP, "--concurrency", "4")
        # Pushed figures arrive without a reload: the marker set above survives.
        until(browser, lambda d: 0 < figure(d, "waiting") < 56)
        until(browser, lambda d: str(worker.pid) in text_of(d, "main"))
        until(
            browser,
            lambda d: (
                figure(d, "running") > 0
                and figure(d, "waiting") > 10
                and "dashboard_app.work" in text_of(d, "main")
            ),  # a worker's running tasks
        )
        screenshot(browser, "overview-draining")  # docs/dashboard.png is one of these
        until(browser, lambda d: figure(d, "waiting") == 0 and figure(d, "running") == 0, 60)
        assert browser.execute_script("return window.sameDocument") is True
        updates = browser.find_element(By.CSS_SELECTOR, "[data-stream]").get_attribute(
            "data-updates"
        )
        assert int(updates) > 1
        assert all(h.get(timeout=30) == "done" for h in handles)
        until(browser, lambda d: "/s" in text_of(d, ".rate"))
        screenshot(browser, "overview-drained")
    finally:
        if worker is not None:
            stop(worker)
        stop(dashboard)


def test_a_failed_task_shows_its_traceback(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    handle = producer["parse_invoice"].delay("no colon here")
    worker = start_cli_worker(redis_url, prefix, APP)
    dashboard, base = start_dashboard(redis_url, prefix)
    try:
        with pytest.raises(aqueue.TaskFailed):
            handle.get(timeout=30)
        browser.get(base + "/")
        browser.find_element(By.NAME, "id").send_keys(handle.id)
        browser.find_element(By.CSS_SELECTOR, "form.search button").click()
        until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "pre.traceback"))
        assert text_of(browser, '[data-figure="state"]') == "failed"
        traceback = text_of(browser, "pre.traceback")
        assert "Traceback (most recent call last)" in traceback
        assert "IndexError" in traceback and "parse_invoice" in traceback
        assert "list index out of range" in text_of(browser, ".error")
        screenshot(browser, "failed-task")
    finally:
        stop(worker)
        stop(dashboard)


def test_a_replayed_dead_letter_runs_again_and_succeeds(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    worker = start_cli_worker(redis_url, prefix, APP, AQUEUE_DEAD_LETTER_ON_FAILURE="1")
    dashboard, base = start_dashboard(redis_url, prefix)
    try:
        handle = producer["fails_once"].delay("welcome-mail")
        with pytest.raises(aqueue.TaskDead):
            handle.get(timeout=30)
        browser.get(base + "/dead")
        until(browser, lambda d: handle.id in d.find_element(By.TAG_NAME, "main").text)
        assert "smtp.invalid" in browser.find_element(By.TAG_NAME, "main").text
        screenshot(browser, "dead-letters")
        confirm(browser, "Replay")
        until(browser, lambda d: d.find_elements(By.ID, "notice"))
        assert "is back in queue default" in browser.find_element(By.ID, "notice").text
        assert handle.get(timeout=30) == "sent on run 2"
        browser.get(base + f"/tasks/{handle.id}")
        state = text_of(browser, '[data-figure="state"]')
        assert state == "succeeded"
        assert "sent on run 2" in text_of(browser, "pre.result")
        browser.get(base + "/dead")
        assert "no dead-lettered messages" in browser.find_element(By.TAG_NAME, "main").text
        screenshot(browser, "replayed")
    finally:
        stop(worker)
        stop(dashboard)


def test_abort_a_running_task_from_its_page(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    worker = start_cli_worker(redis_url, prefix, APP)
    dashboard, base = start_dashboard(redis_url, prefix)
    try:
        handle = producer["long_sleep"].delay(120)
        wait_for(lambda: handle.status() is aqueue.TaskStatus.RUNNING, timeout=30)
        browser.get(base + f"/tasks/{handle.id}")
        assert text_of(browser, '[data-figure="state"]') == "running"
        assert "[120]" in browser.find_element(By.CSS_SELECTOR, "pre.args").text
        confirm(browser, "Abort this task")
        until(browser, lambda d: d.find_elements(By.ID, "notice"))
        assert browser.find_element(By.ID, "notice").text == "abort requested"
        until(
            browser,
            lambda d: text_of(d, '[data-figure="state"]') == "aborted",
        )
        with pytest.raises(aqueue.TaskAborted):
            handle.get(timeout=30)
        assert not browser.find_elements(By.LINK_TEXT, "Abort this task")
        screenshot(browser, "aborted")
    finally:
        stop(worker)
        stop(dashboard)


def test_without_credentials_the_browser_sees_nothing(
    browser: Any, redis_url: str, prefix: str, producer: dict[str, Any]
) -> None:
    handle = producer["work"].delay(0.1)
    dashboard, base = start_dashboard(
        redis_url, prefix, "--read-only", AQUEUE_DASHBOARD_AUTH="ops:s3cret"
    )
    try:
        for path in ("/", f"/tasks/{handle.id}", "/dead", "/events/overview"):
            browser.get(base + path)
            # Chromium answers the basic-auth challenge with an empty page (no one
            # types a password in a headless browser): nothing of the dashboard shows.
            assert not browser.find_elements(By.TAG_NAME, "main"), path
            assert handle.id not in browser.page_source and "Overview" not in browser.title
        screenshot(browser, "auth-refused")
        browser.get(base.replace("http://", "http://ops:s3cret@") + f"/tasks/{handle.id}")
        until(browser, lambda d: handle.id in d.find_element(By.TAG_NAME, "h1").text)
        assert "read-only" in browser.find_element(By.TAG_NAME, "header").text
        assert not browser.find_elements(By.LINK_TEXT, "Abort this task")
    finally:
        stop(dashboard)
