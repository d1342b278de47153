"""The curated public surface and configuration validation."""

from __future__ import annotations

import types

import pytest

import aqueue
from aqueue.core.config import Settings
from aqueue.core.urls import mask_url


def test_all_is_honest() -> None:
    public = {
        name
        for name in dir(aqueue)
        if not name.startswith("_") and not isinstance(getattr(aqueue, name), types.ModuleType)
    }
    assert set(aqueue.__all__) - {"__version__"} == public
    for name in aqueue.__all__:
        assert getattr(aqueue, name) is not None


def test_every_error_derives_from_the_root() -> None:
    errors = [getattr(aqueue, n) for n in aqueue.__all__ if n.endswith(("Error", "Failed"))]
    errors += [aqueue.Retry, aqueue.TaskAborted, aqueue.TaskDead, aqueue.TaskExpired]
    for error in errors:
        assert issubclass(error, aqueue.AqueueError), error
    assert issubclass(aqueue.ResultTimeout, TimeoutError)
    assert issubclass(aqueue.ConnectionFailed, ConnectionError)


def test_unknown_option_names_the_closest_one() -> None:
    with pytest.raises(aqueue.ConfigError, match="did you mean 'visibility_timeout'"):
        aqueue.App("redis://localhost/0", visiblity_timeout=3)


def test_bad_values_are_rejected() -> None:
    with pytest.raises(aqueue.ConfigError, match="redis_url"):
        aqueue.App("http://localhost:6379")
    with pytest.raises(aqueue.ConfigError, match="heartbeat_interval"):
        aqueue.App("redis://localhost/0", visibility_timeout=1, heartbeat_interval=1)
    with pytest.raises(aqueue.ConfigError, match="max_deliveries"):
        aqueue.App("redis://localhost/0", max_deliveries=0)


def test_task_options_are_validated() -> None:
    app = aqueue.App("redis://localhost/0")
    with pytest.raises(aqueue.ConfigError, match="did you mean 'retries'"):
        app.task(retires=3)(lambda: None)

    @app.task
    async def t(timeout: float) -> float:  # a parameter may be called timeout
        return timeout

    with pytest.raises(aqueue.ConfigError, match="unknown enqueue option"):
        t.options(countdown=3)  # Celery's name; aqueue says delay=
    assert t.options(timeout=5)._opts.timeout == 5.0


def test_password_is_masked() -> None:
    app = aqueue.App("redis://user:s3cret@localhost:6379/0", signing_key="k3y")
    for text in (repr(app), repr(app.settings), mask_url(app.settings.redis_url)):
        assert "s3cret" not in text
        assert "k3y" not in text
    assert "***" in repr(app.settings)


def test_password_in_the_query_is_masked() -> None:
    url = "redis://localhost:6379/0?password=s3cret&socket_timeout=5"
    app = aqueue.App(url)
    for text in (repr(app), repr(app.settings), mask_url(app.settings.redis_url)):
        assert "s3cret" not in text
    assert mask_url(url) == "redis://localhost:6379/0?password=***&socket_timeout=5"
    both = mask_url("redis://u:one@h:1/0?sentinel_password=two")
    assert "one" not in both and "two" not in both
    assert mask_url("redis://h:1/0?db=2") == "redis://h:1/0?db=2"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQUEUE_REDIS_URL", "redis://example:6380/1")
    monkeypatch.setenv("AQUEUE_VISIBILITY_TIMEOUT", "90")
    monkeypatch.setenv("AQUEUE_DEAD_LETTER_ON_FAILURE", "yes")
    app = aqueue.App()
    assert app.settings.redis_url == "redis://example:6380/1"
    assert app.settings.visibility_timeout == 90.0
    assert app.settings.dead_letter_on_failure is True
    monkeypatch.setenv("AQUEUE_MAX_DELIVERIES", "many")
    with pytest.raises(aqueue.ConfigError, match="AQUEUE_MAX_DELIVERIES"):
        Settings.from_env()


async def test_redis_down_is_a_clear_error() -> None:
    from .conftest import free_port

    app = aqueue.App(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=1)

    @app.task
    async def t() -> None:
        return None

    with pytest.raises(aqueue.ConnectionFailed, match="Redis"):
        await t.enqueue()
    with pytest.raises(aqueue.ConnectionFailed, match="AQUEUE_REDIS_URL"):
        await app.connect()
    await app.close()


def test_workflows_are_importable_from_aqueue_itself() -> None:
    from aqueue import canvas, groups

    assert (aqueue.chain, aqueue.group, aqueue.chord) == (canvas.chain, groups.group, groups.chord)
    assert {"Signature", "Chain", "Group", "GroupResult", "Chord"} <= set(aqueue.__all__)
    assert {"chain", "group", "chord"} <= set(aqueue.__all__)
