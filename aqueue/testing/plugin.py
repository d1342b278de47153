"""aqueue's pytest plugin (entry point ``pytest11``): fixtures for testing an App's tasks.

Loaded by pytest in every project that has aqueue installed, so it only adds
options and ``aqueue_*`` fixtures, and does nothing until a test asks for one:

- ``aqueue_redis``: the URL of a private ``redis-server`` started on a free port
  for the session (or of the Redis named by ``--aqueue-redis-url`` /
  ``AQUEUE_TEST_REDIS_URL``; a server the kit did not start is never flushed
  or stopped);
- ``aqueue_app``: the project's App (ini option ``aqueue_app = MODULE:APP`` or
  ``--aqueue-app``, or override the fixture) pointed at that server under a
  key prefix of the test's own, closed and restored afterwards;
- ``aqueue_worker``: a :class:`~aqueue.testing.worker.TestWorker` on the test's
  event loop;
- ``aqueue_clock``: a :class:`~aqueue.testing.clock.TestClock` installed on the
  App: time stands still until ``await aqueue_clock.advance(...)`` moves it
  and runs what fell due;
- ``aqueue_eager``: the project's App in eager mode (no Redis at all).

Async fixtures are declared with pytest-asyncio when it is installed, so they
work in its auto and strict modes alike.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..core.errors import ConfigError
from .clock import TestClock
from .server import RedisServer
from .worker import TestWorker

if TYPE_CHECKING:
    from ..app import App

__all__ = [
    "aqueue_app",
    "aqueue_clock",
    "aqueue_eager",
    "aqueue_redis",
    "aqueue_worker",
    "load_app",
]

REDIS_URL_ENV = "AQUEUE_TEST_REDIS_URL"

_async_fixture: Callable[..., Any]
try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # the fixtures below then say what to install
    _async_fixture = pytest.fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aqueue", "aqueue test kit")
    group.addoption(
        "--aqueue-redis-url",
        default=None,
        help=f"a Redis the aqueue fixtures use instead of starting one (or ${REDIS_URL_ENV}); "
        "never flushed",
    )
    group.addoption(
        "--aqueue-app",
        default=None,
        help="MODULE:APP of the App the aqueue_app fixture gives (overrides the ini option)",
    )
    parser.addini("aqueue_app", "MODULE:APP of the App the aqueue_app fixture gives", default="")


def load_app(spec: str) -> App:
    """Import ``MODULE:APP`` (``APP`` may be a dotted attribute path)."""
    from ..app import App

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"aqueue_app must look like MODULE:APP, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not isinstance(target, App):
        raise ConfigError(f"{spec} is a {type(target).__name__}, not an aqueue.App")
    return target


@pytest.fixture(scope="session")
def aqueue_redis(pytestconfig: pytest.Config) -> Iterator[str]:
    """The Redis URL the aqueue fixtures use: the user's, or a private server's."""
    given = pytestconfig.getoption("aqueue_redis_url") or os.environ.get(REDIS_URL_ENV)
    if given:
        yield given
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def aqueue_user_app(pytestconfig: pytest.Config) -> App:
    """The App named by ``--aqueue-app`` or the ``aqueue_app`` ini option."""
    spec = pytestconfig.getoption("aqueue_app") or pytestconfig.getini("aqueue_app")
    if not spec:
        raise ConfigError(
            "the aqueue_app fixture needs your App: set `aqueue_app = MODULE:APP` in the "
            "pytest ini options, pass --aqueue-app MODULE:APP, or override the fixture "
            "aqueue_user_app in a conftest.py"
        )
    return load_app(str(spec))


def _fresh_prefix() -> str:
    return f"aqueue-test-{uuid.uuid4().hex[:12]}"


if _async_fixture is pytest.fixture:

    @pytest.fixture
    def aqueue_app(aqueue_redis: str, aqueue_user_app: App) -> App:
        raise ConfigError("the aqueue_app fixture needs pytest-asyncio: pip install pytest-asyncio")

else:

    @_async_fixture  # type: ignore[untyped-decorator]
    async def aqueue_app(aqueue_redis: str, aqueue_user_app: App) -> AsyncIterator[App]:
        """The App, pointed at the test Redis under a prefix of this test's own."""
        app = aqueue_user_app
        if app.client.injected:
            raise ConfigError(
                "an App made with App(redis=...) can't be re-pointed at the test Redis; "
                "override the aqueue_app fixture to build one for tests"
            )
        saved = app.settings
        # configure() works only before the App connects: drop what an earlier
        # test (or import-time code) opened.
        with contextlib.suppress(Exception):
            await app.close()
        app.close_sync()
        app.configure(redis_url=aqueue_redis, prefix=_fresh_prefix())
        try:
            yield app
        finally:
            try:
                # Only this test's keys go: the server may be the user's own.
                with contextlib.suppress(Exception):
                    await app.broker.delete_every_key()
                await app.close()
            finally:
                app.close_sync()
                app.client.configure(saved)


@pytest.fixture
def aqueue_worker(aqueue_app: App) -> TestWorker:
    """Runs the App's tasks on the test's event loop: ``await aqueue_worker.run_until_idle()``."""
    return TestWorker(aqueue_app)


@pytest.fixture
def aqueue_clock(aqueue_app: App, aqueue_worker: TestWorker) -> Iterator[TestClock]:
    """Virtual time for the App: ``await aqueue_clock.advance(days=7)`` runs a week's work."""
    clock = TestClock(aqueue_app, aqueue_worker).install()
    try:
        yield clock
    finally:
        clock.uninstall()


@pytest.fixture
def aqueue_eager(aqueue_user_app: App) -> Iterator[App]:
    """The App in eager mode: ``enqueue()`` runs the task inline, no Redis at all."""
    with aqueue_user_app.eager():
        yield aqueue_user_app
