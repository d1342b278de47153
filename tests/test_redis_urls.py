"""Sentinel and Cluster URLs: accepted everywhere a URL is, secrets masked, clear errors."""

from __future__ import annotations

import pytest

import aqueue
from aqueue.core.config import Settings
from aqueue.core.urls import RedisTarget, mask_url, parse_redis_url


def test_sentinel_url_names_the_sentinels_the_service_and_the_db() -> None:
    target = parse_redis_url("redis+sentinel://app:s%40cret@h1:26380,h2,[::1]:26381/mymaster/2")
    assert target == RedisTarget(
        "sentinel",
        (("h1", 26380), ("h2", 26379), ("::1", 26381)),
        "mymaster",
        2,
        "app",
        "s@cret",
    )


def test_cluster_url_names_the_seed_nodes() -> None:
    target = parse_redis_url("rediss+cluster://:pw@10.0.0.1:7000,10.0.0.2")
    assert target.kind == "cluster"
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert (target.password, target.tls, target.db) == ("pw", True, 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h:26379", "names the service"),
        ("redis+sentinel://h:26379/svc/x", "must be a number"),
        ("redis+cluster://h:7000/3", "only database 0"),
        ("redis+cluster://h:port", "is not a port number"),
        ("redis+cluster://:secret@,h", "a host is missing"),
        ("redis+foo://h", "redis\\+sentinel://"),
        ("http://h", "redis\\+cluster://"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(aqueue.ConfigError, match=message) as caught:
        aqueue.App(url)
    assert "secret" not in str(caught.value)


def test_passwords_are_masked_in_every_form() -> None:
    app = aqueue.App(
        "redis+sentinel://user:topsecret@h1:1,h2:2/mymaster/1", sentinel_password="alsosecret"
    )
    for text in (repr(app), repr(app.settings), mask_url(app.settings.redis_url)):
        assert "topsecret" not in text and "alsosecret" not in text
    assert mask_url(app.settings.redis_url) == "redis+sentinel://user:***@h1:1,h2:2/mymaster/1"
    assert mask_url("redis+cluster://:pw@a:1,b:2") == "redis+cluster://:***@a:1,b:2"


def test_sentinel_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQUEUE_REDIS_URL", "redis+sentinel://h:26379/mymaster")
    monkeypatch.setenv("AQUEUE_SENTINEL_PASSWORD", "fromenv")
    app = aqueue.App()
    assert app.settings.sentinel_password == "fromenv"
    assert parse_redis_url(app.settings.redis_url).service_name == "mymaster"
    assert "fromenv" not in repr(app.settings)


def test_configure_accepts_a_cluster_url() -> None:
    app = aqueue.App("redis://localhost:6379/0")
    app.configure(redis_url="redis+cluster://127.0.0.1:7000")
    assert Settings.replace(app.settings).redis_url == "redis+cluster://127.0.0.1:7000"


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "redis+sentinel://h:26379/mymaster", "redis+cluster://h:7000"]
)
def test_every_connection_names_its_client_without_reading_package_metadata(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    import redis.utils

    from aqueue._redis.connection import connect

    def no_lookup() -> str:
        raise AssertionError("looked up redis-py's version in the package metadata")

    monkeypatch.setattr(redis.utils, "get_lib_version", no_lookup)
    client = connect(Settings(redis_url=url))
    if url.startswith("redis+cluster"):
        (node,) = client.nodes_manager.startup_nodes.values()
        made = [node.connection_class(**node.connection_kwargs)]
    else:
        made = [client.connection_pool.make_connection()]
    if url.startswith("redis+sentinel"):
        (sentinel,) = client.connection_pool.sentinel_manager.sentinels
        made.append(sentinel.connection_pool.make_connection())
    for connection in made:  # CLIENT SETINFO sends what it always sent
        assert connection.driver_info.formatted_name == "redis-py"
        assert connection.driver_info.lib_version == redis.__version__
