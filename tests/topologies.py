"""Real Redis topologies for tests: a Sentinel-watched master + replica, a Cluster.

Each is a handful of processes this test session starts on free loopback
ports and stops by their own handles; nothing here touches a Redis the
session did not start. Both are ready in about two seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from .conftest import RedisServer, free_port

SERVICE = "mymaster"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Call ``check`` until it answers truthy (exceptions count as "not yet")."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (redis.exceptions.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _server(workdir: str, *args: str, port: int | None = None) -> RedisServer:
    port = port or free_port()
    directory = os.path.join(workdir, str(port))
    os.makedirs(directory)
    server = RedisServer(port, directory, ["--save", "", "--appendonly", "no", *args])
    server.start()
    return server


@dataclass
class SentinelProcess:
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class SentinelTopology:
    """A master, one replica and three sentinels watching them as ``mymaster``."""

    servers: list[RedisServer]
    sentinels: list[SentinelProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinels[index].port, decode_responses=True)

    def master_address(self) -> tuple[str, int]:
        with self.sentinel_client() as client:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return str(host), int(port)

    def master(self) -> RedisServer:
        port = self.master_address()[1]
        return next(s for s in self.servers if s.port == port)

    def wait_healthy(self) -> None:
        """Every sentinel agrees on the master, sees the replica and the other two."""

        def healthy() -> bool:
            master_port = self.master_address()[1]
            for index in range(len(self.sentinels)):
                with self.sentinel_client(index) as client:
                    info = client.execute_command("SENTINEL", "MASTER", SERVICE)
                    info = (
                        dict(zip(info[::2], info[1::2], strict=True))
                        if isinstance(info, list)
                        else info
                    )
                    if int(info["port"]) != master_port or "down" in info["flags"]:
                        return False
                    if int(info["num-other-sentinels"]) < len(self.sentinels) - 1:
                        return False
                    replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
                    good = 0
                    for replica in replicas:
                        fields = (
                            dict(zip(replica[::2], replica[1::2], strict=True))
                            if isinstance(replica, list)
                            else replica
                        )
                        if (
                            "down" not in fields["flags"]
                            and fields.get("master-link-status") == "ok"
                        ):
                            good += 1
                    if good < 1:
                        return False
            with redis.Redis(port=master_port, decode_responses=True) as master:
                return master.info("replication").get("connected_slaves", 0) >= 1

        wait_for(healthy, "the Sentinel topology to be healthy")

    def failover(self) -> tuple[str, int]:
        """``SENTINEL FAILOVER`` (the old master stays up); returns the new master."""
        self.wait_healthy()
        old = self.master_address()
        # A loaded machine can let a Sentinel's failover lapse (its replica
        # looked unfit for a moment): ask again rather than wait for ever.
        for attempt in range(3):
            with self.sentinel_client() as client:
                try:
                    client.execute_command("SENTINEL", "FAILOVER", SERVICE)
                except redis.exceptions.ResponseError:
                    if attempt == 0:
                        raise
                    # INPROG: the previous request is still being carried out.
            try:
                new = wait_for(
                    lambda: (address := self.master_address()) != old and address,
                    "Sentinel to name a new master",
                    timeout=15.0 if attempt < 2 else 30.0,
                )
                break
            except AssertionError:
                if attempt == 2:
                    raise
                self.wait_healthy()
        # Sentinels refresh what they know of replicas every 10 s: the next
        # user of the topology waits for wait_healthy(), this caller need not.
        return tuple(new)  # type: ignore[return-value]


@contextlib.contextmanager
def sentinel_topology(*master_args: str) -> Iterator[SentinelTopology]:
    """``master_args`` go to the first master only (e.g. to make it refuse demotion)."""
    binary = shutil.which("redis-sentinel")
    if binary is None:
        pytest.skip("redis-sentinel is not installed: apt-get install -y redis-sentinel")
    with tempfile.TemporaryDirectory(prefix="aqueue-test-sentinel-") as workdir:
        sync = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
        topology = SentinelTopology([_server(workdir, *sync, *master_args)])
        try:
            master = topology.servers[0]
            topology.servers.append(
                _server(workdir, *sync, "--replicaof", "127.0.0.1", str(master.port))
            )
            for _ in range(3):
                port = free_port()
                conf = os.path.join(workdir, f"sentinel-{port}.conf")
                with open(conf, "w") as f:
                    f.write(
                        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
                        f"sentinel down-after-milliseconds {SERVICE} 200\n"
                        f"sentinel failover-timeout {SERVICE} 1000\n"
                        f"sentinel parallel-syncs {SERVICE} 1\n"
                    )
                proc = subprocess.Popen(
                    [binary, conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                topology.sentinels.append(SentinelProcess(port, proc))
            for sentinel in topology.sentinels:
                with redis.Redis(port=sentinel.port) as client:
                    wait_for(client.ping, f"sentinel on port {sentinel.port}")
            topology.wait_healthy()
            yield topology
        finally:
            for sentinel in topology.sentinels:
                sentinel.stop()
            for server in topology.servers:
                server.stop()


@dataclass
class ClusterTopology:
    """Three masters, each with one replica; slots split in three ranges."""

    servers: list[RedisServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])
        return f"redis+cluster://{hosts}"

    def client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(port=server.port, decode_responses=True)

    def node_id(self, server: RedisServer) -> str:
        with self.client(server) as client:
            return str(client.execute_command("CLUSTER", "MYID"))

    def role(self, server: RedisServer) -> str:
        with self.client(server) as client:
            return str(client.info("replication")["role"])

    def wait_healthy(self) -> None:
        """Every live node sees the cluster ok, 3 masters, each with a replica in sync."""

        def healthy() -> bool:
            live = [s for s in self.servers if s.proc is not None]
            for server in live:
                with self.client(server) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    info = client.info("replication")
                    if info["role"] == "master" and info.get("connected_slaves", 0) < 1:
                        return False
                    if info["role"] == "slave" and info["master_link_status"] != "up":
                        return False
            return True

        wait_for(healthy, "the cluster to be healthy", timeout=60)

    def slot_owner(self, key: str) -> RedisServer:
        with self.client(self.servers[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(s for s in self.servers if s.port == port)
        raise AssertionError(f"no node serves {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        master_id = self.node_id(master)
        for server in self.servers:
            if server.proc is None or server is master:
                continue
            with self.client(server) as client:
                line = client.execute_command("CLUSTER", "NODES")
            for row in str(line).splitlines():
                parts = row.split()
                if "myself" in parts[2] and parts[3] == master_id:
                    return server
        raise AssertionError("the master has no replica")


@contextlib.contextmanager
def cluster_topology() -> Iterator[ClusterTopology]:
    with tempfile.TemporaryDirectory(prefix="aqueue-test-cluster-") as workdir:
        topology = ClusterTopology([])
        try:
            for _ in range(6):
                port = _cluster_port()
                topology.servers.append(
                    _server(
                        workdir,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--repl-diskless-sync",
                        "yes",
                        "--repl-diskless-sync-delay",
                        "0",
                        port=port,
                    )
                )
            masters, replicas = topology.servers[:3], topology.servers[3:]
            bounds = [(0, 5460), (5461, 10922), (10923, 16383)]
            for server, (start, end) in zip(masters, bounds, strict=True):
                with topology.client(server) as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
            with topology.client(masters[0]) as client:
                for server in topology.servers[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", server.port)

            def everyone_met() -> bool:
                for server in topology.servers:
                    with topology.client(server) as client:
                        if int(client.cluster("info")["cluster_known_nodes"]) < 6:
                            return False
                return True

            wait_for(everyone_met, "the cluster nodes to meet")
            for master, replica in zip(masters, replicas, strict=True):
                master_id = topology.node_id(master)
                with topology.client(replica) as client:
                    wait_for(
                        lambda c=client, m=master_id: c.execute_command("CLUSTER", "REPLICATE", m),
                        "a replica to attach",
                    )
            topology.wait_healthy()
            yield topology
        finally:
            for server in topology.servers:
                server.stop()
