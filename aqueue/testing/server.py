"""A private ``redis-server`` for a test session, on a free port, stopped by its PID.

The server keeps nothing on disk (no RDB, no AOF) and listens on 127.0.0.1
only. Readiness is checked with a bare ``PING`` on a socket, so the test kit
needs no Redis client of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from ..core.errors import AqueueError

__all__ = ["RedisServer", "free_port"]

#: How long a fresh server may take to answer PING.
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A ``redis-server`` process started (and later stopped) by the test kit."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AqueueError(
                "aqueue's pytest fixtures need redis-server on PATH (apt-get install "
                "redis-server, brew install redis), or a Redis of yours named with "
                "--aqueue-redis-url / AQUEUE_TEST_REDIS_URL; eager mode needs neither"
            )
        self._workdir = tempfile.TemporaryDirectory(prefix="aqueue-testing-redis-")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self._workdir.name,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AqueueError(
                    f"the test kit's redis-server on port {self.port} did not start "
                    f"within {START_TIMEOUT:.0f}s"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the process this object started (and nothing else)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
