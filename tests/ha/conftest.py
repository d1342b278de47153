"""Fixtures for tests on Sentinel and Cluster: session-wide topologies.

The topologies are expensive (five or six processes each), so the core tests
share one of each per session; fault tests that fail a topology over wait
until it is healthy again before they return it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import aqueue

from ..topologies import ClusterTopology, SentinelTopology, cluster_topology, sentinel_topology


@pytest.fixture(scope="session")
def sentinels() -> Iterator[SentinelTopology]:
    with sentinel_topology() as topology:
        yield topology


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterTopology]:
    with cluster_topology() as topology:
        yield topology


@pytest.fixture(params=["standalone", "sentinel", "cluster"])
def any_url(request: pytest.FixtureRequest) -> str:
    """The URL of each topology in turn: the same test runs on all three."""
    if request.param == "standalone":
        url: str = request.getfixturevalue("redis_url")
        return url
    topology = request.getfixturevalue("sentinels" if request.param == "sentinel" else "cluster")
    topology.wait_healthy()
    return str(topology.url)


@pytest.fixture
async def ha_app(any_url: str, prefix: str) -> AsyncIterator[aqueue.App]:
    application = aqueue.App(any_url, prefix=prefix)
    try:
        yield application
    finally:
        await application.close()
